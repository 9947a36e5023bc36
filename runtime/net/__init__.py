"""Network providers: the wire protocol, TCP robots/PLCs and WebSocket clients."""
