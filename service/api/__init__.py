"""HTTP routes: parse the request, call the handlers in ``service.inference``, shape the reply."""
