"""Payment provider simulator service: takes payments, sends signed async notifies (``python -m producers.provider``)."""
