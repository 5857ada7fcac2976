"""Backend servers of a pomelo cluster: player requests forwarded by a Node connector.

A gateway made with ``server.create(handlers=DIR, transport="mqtt", ...)`` serves
pomelo's ``sys.msgRemote.forwardMessage``: a connector forwards a player's request on
route ``<type>.<handler>.<method>`` to it, the handler answers, and pushes to players
and changes their sessions by calling the connector's ``sys`` remotes
(``sessionRemote``, ``channelRemote``) through the gateway's own client.

One concept per module: ``handlers`` (the handler directory and its routes),
``session`` (the backend session of a request), ``sessions`` (the session service),
``channels`` (the channel service), ``filters`` (handler filters), ``msg_remote``
(the ``sys`` service a connector calls), ``app`` (what handlers receive: ``app.rpc``,
``app.channels``, ``app.sessions``).
"""

from .app import App
from .channels import Channel, ChannelService
from .handlers import HandlerError
from .session import BackendSession
from .sessions import SessionService

__all__ = ["App", "BackendSession", "Channel", "ChannelService", "HandlerError",
           "SessionService"]
