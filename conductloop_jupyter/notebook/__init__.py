"""What a notebook user sees: frames now; widgets and figures build on them."""
