"""Demo shop: catalogue, login, search, cart and checkout behind the gateway (``python -m producers.shop``)."""
