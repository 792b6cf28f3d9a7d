"""DIRAC's hooks for DiracX tokens: ``dirac-proxy-init``, ``dirac-proxy-info``, the ProxyManager's exchange.

The DIRACX block, the proxy file and the token claims live in :mod:`diracx_bridge.tokens`; this
package only plugs them into DIRAC (:mod:`.hooks`, :mod:`.proxy_init`, :mod:`.info`,
:mod:`.exchange`) and holds ``diracx-bridge whoami`` (:mod:`.cli`). Importing it imports neither
DIRAC nor diracx.
"""
