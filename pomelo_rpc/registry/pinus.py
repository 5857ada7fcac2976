"""``pinus://host:port``: membership through the master of a pinus 1.7 cluster.

pinus-admin 1.7.4 speaks pomelo-admin's monitor protocol unchanged (``pomelo_monitor``),
and pinus's master watcher and modules are pomelo's, so this is the ``pomelo://``
registry (``registry.pomelo``) with pinus's differences:

- ``info`` is always sent (pinus's master sets ``info.pid`` without a fallback); the
  watch-only client's carries its id only, as for pomelo.
- ``info.remoterPaths``: pinus builds ``app.rpc`` from the remote folders each server
  advertises (``[{namespace, serverType, path}]``) and loads them from its own disk.
  A Python server advertises the folder of JS stubs of its services that
  ``python -m pomelo_rpc stubs --remote user=DIR --out STUBS`` writes (``stubs=STUBS``
  in the URL, a path valid on every Node host), or the ``remoterPaths`` of its
  ``server_info`` as they are. Without either, Node servers reach it only through
  ``app.rpcInvoke``. A backend server (``handlers=``) needs a ``sys`` entry there as
  well, the folder of a ``msgRemote`` stub (``stubs --backend``): pinus's connectors
  forward player requests through the ``app.sysrpc`` they build from it.
- The master reads its admin tokens from ``config/adminServer`` (.json, .js or .ts) in
  its working directory.

URL: ``pinus://master-host:port?token=T&client_type=pomelo_rpc_client&stubs=/abs/stubs``.
The server must speak the cluster's rpc transport: ``transport="mqtt"`` (pinus's
default) or ``"pinus-tcp"`` (``createTcpMailBox`` / ``createTcpAcceptor``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..stubs import remoter_paths
from .base import Record
from .pomelo import URL_DEFAULTS, PomeloMasterRegistry

__all__ = ["PinusMasterRegistry"]

log = logging.getLogger("pomelo_rpc.registry.pinus")


class PinusMasterRegistry(PomeloMasterRegistry):
    """A ``Registry`` whose engine is the master of a pinus cluster."""

    scheme = "pinus"
    url_defaults: dict[str, Any] = {
        **URL_DEFAULTS,
        "stubs": None,     # the stubs folder to advertise in info.remoterPaths
    }
    admin_file = "config/adminServer (.json, .js or .ts, in the master's working directory)"
    #: the registering server is a backend (``handlers=``; the gateway sets it): its
    #: remoterPaths need the ``sys`` entry connectors forward player requests through
    backend = False

    def _server_info(self, rec: Record) -> dict[str, Any]:
        """pomelo's info, with the ``remoterPaths`` pinus builds ``app.rpc`` from."""
        info = super()._server_info(rec)
        server_type = rec["server_type"]
        if "remoterPaths" not in info:
            stubs = self.params["stubs"]
            if stubs:
                info["remoterPaths"] = remoter_paths(stubs, server_type, self.backend)
            else:
                log.warning("registry: %s advertises no remoterPaths (no stubs= in the "
                            "pinus URL): Node servers reach it through app.rpcInvoke only, "
                            "not app.rpc.%s", rec["id"], server_type)
                info["remoterPaths"] = []
        paths = info["remoterPaths"]
        if self.backend and not any(
                type(p) is dict and p.get("namespace") == "sys"
                and p.get("serverType") == server_type
                for p in (paths if type(paths) is list else ())):
            log.warning("registry: %s has handlers but advertises no sys remoterPath: "
                        "pinus's connectors build app.sysrpc.%s, which they forward player "
                        "requests through, from one (none: requests get 500); write the "
                        "stubs with `python -m pomelo_rpc stubs --backend`", rec["id"],
                        server_type)
        return info
