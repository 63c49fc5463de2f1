"""Real reference servers (nginx's mail proxy, Dovecot, Postfix) as private throw-away instances.

Each class starts its server as a child process on loopback ports from a test's directory and
stops it, with everything it spawned, when the test ends. Use ``common.require`` with a class's
``unavailable_reason()`` to skip a test where the server is missing (a failure under CI).
"""
