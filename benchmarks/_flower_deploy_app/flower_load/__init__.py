"""A Flower App for the deployment load benchmark: see ``server_app`` and ``client_app``."""
