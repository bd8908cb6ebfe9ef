"""PROXY protocol (HAProxy v1/v2) on the listeners: ``header`` decides (pure), ``listener`` wires it to Twisted."""
