"""The appliance's HTTP face on the WebSocket port: /healthz, /readyz, /metrics."""
