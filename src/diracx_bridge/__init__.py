"""diracx-bridge."""
