"""Where each door reads the wire and writes its answer."""
