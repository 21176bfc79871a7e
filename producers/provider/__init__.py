"""The payment provider simulator: takes payments and sends their signed async notifies.

``python -m producers.provider`` is the service the shop pays through (app.py,
notify_sender.py); simulator.py posts notifies straight to the order service, as
load for tests, benches and the demo.
"""
