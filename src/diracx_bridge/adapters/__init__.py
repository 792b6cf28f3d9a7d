"""Drop-in adapters of DIRAC client classes, forwarding to DiracX."""
