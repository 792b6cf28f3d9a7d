"""The grid-in-a-box (real DIRAC, DiracX and MariaDB on loopback) for tests, the demo and benchmarks."""
