"""The web service: ``app.create_app`` (REST API + the offline page in ``static/``), ``analysis`` (one
upload -> one JSON response), ``testing`` (mask oracle, local server thread, bounded load test)."""
