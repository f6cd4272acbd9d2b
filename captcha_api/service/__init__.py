"""The web service: app factory, settings, routes, request and answer models, errors, security, feedback."""
