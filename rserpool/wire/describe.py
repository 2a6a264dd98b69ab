"""Human-readable one-line summaries and JSON-safe forms of messages.

No I/O.  Used by ``rserpool dump`` and by log lines.
"""

from __future__ import annotations

from typing import Any

from ..constants import ErrorCause, PolicyType, UpdateAction

__all__ = ["summarize", "json_safe", "handle_text", "policy_text", "transport_text"]

_TRANSPORT_NAMES = {
    "SctpTransport": "sctp", "TcpTransport": "tcp", "UdpTransport": "udp",
    "UdpLiteTransport": "udplite", "DccpTransport": "dccp",
}


def handle_text(handle: bytes) -> str:
    """A pool handle as text when it is printable ASCII, else ``0x`` + hex."""
    if handle and all(0x20 < b < 0x7F for b in handle):
        return handle.decode("ascii")
    return "0x" + handle.hex()


def _percent(value: int) -> str:
    return f"{100.0 * value / 0xFFFFFFFF:.1f}%"


def policy_text(policy: Any) -> str:
    """``RR``-style policy name with its values (loads as percentages)."""
    try:
        name = PolicyType(policy.policy_type).name
    except ValueError:
        name = f"0x{policy.policy_type:08x}"
    parts = []
    for attr in ("weight", "priority", "load", "load_degradation", "load_dpf",
                 "weight_dpf", "distance"):
        value = getattr(policy, attr)
        if value is None:
            continue
        if attr in ("load", "load_degradation"):
            parts.append(f"{attr}={_percent(value)}")
        else:
            parts.append(f"{attr}={value}")
    return name + (f"({', '.join(parts)})" if parts else "")


def transport_text(transport: Any) -> str:
    """``sctp:[10.0.0.1,10.0.0.2]:5000`` and the like."""
    proto = _TRANSPORT_NAMES.get(type(transport).__name__, "?")
    addrs = ",".join(transport.addresses)
    use = getattr(transport, "transport_use", None)
    suffix = "+ctrl" if use == 1 else ""
    return f"{proto}:[{addrs}]:{transport.port}{suffix}"


def _causes_text(causes: Any) -> str:
    out = []
    for c in causes:
        try:
            out.append(ErrorCause(c.code).name)
        except ValueError:
            out.append(f"0x{c.code:04x}")
    return "error=" + ",".join(out)


def _pe_text(pe: Any) -> str:
    text = (f"pe=0x{pe.identifier:08x} home=0x{pe.home_registrar:08x} "
            f"life={pe.registration_life}ms {transport_text(pe.user_transport)} "
            f"{policy_text(pe.policy)}")
    if pe.asap_transport is not None:
        text += f" asap={transport_text(pe.asap_transport)}"
    return text


def summarize(msg: Any) -> str:
    """The message's name and key fields on one line."""
    name = type(msg).__name__
    fields = []
    if hasattr(msg, "sender_id"):
        fields.append(f"from=0x{msg.sender_id:08x} to=0x{msg.receiver_id:08x}")
    if hasattr(msg, "server_id"):
        fields.append(f"server=0x{msg.server_id:08x}")
    if getattr(msg, "home", False):
        fields.append("H")
    for flag, letter in (("reply_required", "R"), ("rejected", "R"), ("more", "M"),
                         ("own_children_only", "W"), ("takeover_suggested", "T")):
        if getattr(msg, flag, False):
            fields.append(letter)
    if hasattr(msg, "action"):
        try:
            fields.append(UpdateAction(msg.action).name)
        except ValueError:
            fields.append(f"action=0x{msg.action:04x}")
    if hasattr(msg, "pool_handle"):
        fields.append(f"handle={handle_text(msg.pool_handle)}")
    if getattr(msg, "identifier", None) is not None:
        fields.append(f"pe=0x{msg.identifier:08x}")
    if getattr(msg, "items", None) is not None:
        fields.append(f"items={msg.items}")
    if hasattr(msg, "target_id"):
        fields.append(f"target=0x{msg.target_id:08x}")
    if hasattr(msg, "checksum"):
        fields.append(f"checksum=0x{msg.checksum:04x}")
    if getattr(msg, "server_info", None) is not None:
        fields.append(f"enrp={transport_text(msg.server_info.transport)}")
    if getattr(msg, "policy", None) is not None:
        fields.append(f"policy={policy_text(msg.policy)}")
    if getattr(msg, "pool_element", None) is not None:
        fields.append(_pe_text(msg.pool_element))
    for pe in getattr(msg, "pool_elements", ()):
        fields.append("[" + _pe_text(pe) + "]")
    for handle, pes in getattr(msg, "entries", ()):
        fields.append(f"{{{handle_text(handle)}: {len(pes)} PE(s)}}")
    for si in getattr(msg, "servers", ()):
        fields.append(f"[server=0x{si.server_id:08x} {transport_text(si.transport)}]")
    for t in getattr(msg, "transports", ()):
        fields.append(transport_text(t))
    if getattr(msg, "error", None) is not None:
        fields.append(_causes_text(msg.error))
    if getattr(msg, "causes", None) is not None:
        fields.append(_causes_text(msg.causes))
    if hasattr(msg, "cookie"):
        fields.append(f"cookie={len(msg.cookie)}B")
    if msg.unknown:
        fields.append("unknown=" + ",".join(f"0x{u.param_type:04x}" for u in msg.unknown))
    return " ".join([name] + fields)


def json_safe(value: Any) -> Any:
    """Replace bytes (by ``{"hex": ..., "text": ...}`` or hex) so that
    ``json.dumps`` accepts a ``to_dict()`` result."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex(), "text": handle_text(bytes(value))}
    return value
