"""SMTP: the client dialogue before authentication and the login to the backend MTA."""
