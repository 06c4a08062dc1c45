"""Who may talk to whom: consortium certificates and mutual TLS."""
