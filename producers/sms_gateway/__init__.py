"""SMS gateway simulator: records the text messages it is asked to send (``python -m producers.sms_gateway``)."""
