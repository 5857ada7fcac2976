"""Type stub of the compiled MQTT 3.1.1 codec (twin: pomelo_rpc/core/mqtt.py)."""
from typing import Any

CONNECT: int
CONNACK: int
PUBLISH: int
PUBACK: int
PUBREC: int
PUBREL: int
PUBCOMP: int
SUBSCRIBE: int
SUBACK: int
UNSUBSCRIBE: int
UNSUBACK: int
PINGREQ: int
PINGRESP: int
DISCONNECT: int
TOPIC_RPC: str
MAX_REMAINING: int
PINGREQ_PACKET: bytes
PINGRESP_PACKET: bytes
DISCONNECT_PACKET: bytes

class MqttDecoder:
    def __init__(self, max_size: int = ...) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[Any, ...]]: ...

def make_client_id() -> str: ...
def encode_connect(client_id: str | bytes | None = ..., keepalive: int = ...,
                   username: str | None = ..., password: bytes | None = ...) -> bytes: ...
def encode_connack(return_code: int = ..., session_present: bool = ...) -> bytes: ...
def encode_publish(payload: bytes | bytearray | memoryview, topic: str | bytes = ...,
                   qos: int = ..., packet_id: int = ...) -> bytes: ...
def encode_pingreq() -> bytes: ...
def encode_pingresp() -> bytes: ...
def encode_disconnect() -> bytes: ...
def json_string(s: str) -> str: ...
