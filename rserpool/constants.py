"""Protocol numbers of RSerPool (RFC 5352 ASAP, RFC 5353 ENRP, RFC 5354
parameters, RFC 5356 policies) and RSPLIB's extensions.

Pure data, no I/O.  Enum members are spelled as in the RFCs.  Where RSPLIB and
the RFCs disagree, the values here are what goes on the wire (see
``shared/spec/RSERPOOL.md`` section 11).
"""

from __future__ import annotations

import functools
from enum import IntEnum

__all__ = [
    "AsapType", "EnrpType", "ParamType", "ErrorCause", "PolicyType",
    "TransportUse", "UpdateAction", "PPID", "POLICY_VALUE_NAMES",
    "ASAP_PORT", "ENRP_PORT", "ASAP_ANNOUNCE_GROUP", "ENRP_PRESENCE_GROUP",
    "MAX_MESSAGE_SIZE", "MAX32", "action_bits", "policy_name",
]

ASAP_PORT = 3863
ENRP_PORT = 9901
ASAP_ANNOUNCE_GROUP = "239.0.0.50"
ENRP_PRESENCE_GROUP = "239.0.0.51"
#: The message length field is 16 bits wide.
MAX_MESSAGE_SIZE = 65535
MAX32 = 0xFFFFFFFF


class PPID(IntEnum):
    """SCTP payload protocol identifiers (RFC 5352/5353, IANA)."""

    ASAP = 11
    ENRP = 12


class AsapType(IntEnum):
    """ASAP message types (RFC 5352 section 2.2)."""

    REGISTRATION = 0x01
    DEREGISTRATION = 0x02
    REGISTRATION_RESPONSE = 0x03
    DEREGISTRATION_RESPONSE = 0x04
    HANDLE_RESOLUTION = 0x05
    HANDLE_RESOLUTION_RESPONSE = 0x06
    ENDPOINT_KEEP_ALIVE = 0x07
    ENDPOINT_KEEP_ALIVE_ACK = 0x08
    ENDPOINT_UNREACHABLE = 0x09
    SERVER_ANNOUNCE = 0x0A
    COOKIE = 0x0B
    COOKIE_ECHO = 0x0C
    BUSINESS_CARD = 0x0D
    ERROR = 0x0E


class EnrpType(IntEnum):
    """ENRP message types (RFC 5353 section 2).  ERROR is 0x0a on the wire
    (RSPLIB, Wireshark); the IANA page's 0x10 is a registry typo."""

    PRESENCE = 0x01
    HANDLE_TABLE_REQUEST = 0x02
    HANDLE_TABLE_RESPONSE = 0x03
    HANDLE_UPDATE = 0x04
    LIST_REQUEST = 0x05
    LIST_RESPONSE = 0x06
    INIT_TAKEOVER = 0x07
    INIT_TAKEOVER_ACK = 0x08
    TAKEOVER_SERVER = 0x09
    ERROR = 0x0A


class ParamType(IntEnum):
    """Parameter types (RFC 5354 section 3, plus the handle resolution option of
    draft-dreibholz-rserpool-asap-hropt).  Full 16-bit values, action bits
    included."""

    IPV4_ADDRESS = 0x0001
    IPV6_ADDRESS = 0x0002
    DCCP_TRANSPORT = 0x0003
    SCTP_TRANSPORT = 0x0004
    TCP_TRANSPORT = 0x0005
    UDP_TRANSPORT = 0x0006
    UDP_LITE_TRANSPORT = 0x0007
    POOL_MEMBER_SELECTION_POLICY = 0x0008
    POOL_HANDLE = 0x0009
    POOL_ELEMENT = 0x000A
    SERVER_INFORMATION = 0x000B
    OPERATION_ERROR = 0x000C
    COOKIE = 0x000D
    PE_IDENTIFIER = 0x000E
    PE_CHECKSUM = 0x000F
    HANDLE_RESOLUTION_OPTION = 0x803F


def action_bits(param_type: int) -> tuple[bool, bool]:
    """The two action bits of an unrecognised parameter type as
    ``(skip, report)`` (RFC 5354 section 3, same scheme as SCTP):
    ``00`` stop silently, ``01`` stop and report, ``10`` skip silently,
    ``11`` skip and report."""
    return bool(param_type & 0x8000), bool(param_type & 0x4000)


class ErrorCause(IntEnum):
    """Operation Error cause codes.  0x0001-0x000A are RFC 5354's; the rest are
    RSPLIB's internal error numbers, which it copies onto the wire.  A decoder
    keeps any other code as a plain ``int``."""

    UNRECOGNIZED_PARAMETER = 0x0001
    UNRECOGNIZED_MESSAGE = 0x0002
    INVALID_VALUES = 0x0003
    NON_UNIQUE_PE_IDENTIFIER = 0x0004
    POOLING_POLICY_INCONSISTENT = 0x0005
    LACK_OF_RESOURCES = 0x0006
    INCONSISTENT_TRANSPORT_TYPE = 0x0007
    INCONSISTENT_DATA_CONTROL_CONFIGURATION = 0x0008
    UNKNOWN_POOL_HANDLE = 0x0009
    REJECTION_DUE_TO_SECURITY_CONSIDERATIONS = 0x000A
    # RSPLIB's own numbers (seen on the wire, shared/spec section 4.6 and 12).
    RSPLIB_INVALID_MESSAGE = 0x0010
    RSPLIB_INVALID_VALUE = 0x0011
    RSPLIB_SILENT_UNRECOGNIZED_PARAMETER = 0x1009
    RSPLIB_WRONG_PROTOCOL = 0x100A
    RSPLIB_UNSUPPORTED_POLICY = 0x100B
    RSPLIB_INVALID_PE_IDENTIFIER = 0xF000
    RSPLIB_INVALID_POLICY = 0xF003
    RSPLIB_INVALID_POOL_HANDLE = 0xF004
    RSPLIB_INVALID_ADDRESSES = 0xF005
    RSPLIB_INVALID_ASAP_TRANSPORT = 0xF006
    RSPLIB_NO_USABLE_ASAP_ADDRESSES = 0xF007
    RSPLIB_NO_USABLE_USER_ADDRESSES = 0xF008


class PolicyType(IntEnum):
    """Pool member selection policies (RFC 5356 and RSPLIB extensions)."""

    ROUND_ROBIN = 0x00000001
    WEIGHTED_ROUND_ROBIN = 0x00000002
    RANDOM = 0x00000003
    WEIGHTED_RANDOM = 0x00000004
    PRIORITY = 0x00000005
    LEAST_USED = 0x40000001
    LEAST_USED_DEGRADATION = 0x40000002
    PRIORITY_LEAST_USED = 0x40000003
    RANDOMIZED_LEAST_USED = 0x40000004
    # RSPLIB extensions
    RANDOMIZED_PRIORITY_LEAST_USED = 0xB0001001
    RANDOMIZED_LEAST_USED_DEGRADATION = 0xB0001002
    PRIORITY_LEAST_USED_DEGRADATION = 0xB0001003
    RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION = 0xB0001004
    WEIGHTED_RANDOM_DPF = 0xB0002001
    LEAST_USED_DPF = 0xB0002002
    LEAST_USED_DEGRADATION_DPF = 0xB0002003


@functools.lru_cache(maxsize=64)
def policy_name(policy_type: int) -> str:
    """A policy type's name (``"ROUND_ROBIN"``), or its hex when unknown."""
    try:
        return PolicyType(policy_type).name
    except ValueError:
        return f"0x{int(policy_type):08x}"


#: The 32-bit policy values that follow the policy type on the wire, by name.
#: PLU's second word is its "load increment"; RSPLIB and Wireshark call it
#: degradation, and so does this table (``PoolPolicy.load_degradation``).
POLICY_VALUE_NAMES: dict[int, tuple[str, ...]] = {
    PolicyType.ROUND_ROBIN: (),
    PolicyType.WEIGHTED_ROUND_ROBIN: ("weight",),
    PolicyType.RANDOM: (),
    PolicyType.WEIGHTED_RANDOM: ("weight",),
    PolicyType.PRIORITY: ("priority",),
    PolicyType.LEAST_USED: ("load",),
    PolicyType.LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.PRIORITY_LEAST_USED: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_LEAST_USED: ("load",),
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.WEIGHTED_RANDOM_DPF: ("weight", "weight_dpf", "distance"),
    PolicyType.LEAST_USED_DPF: ("load", "load_dpf", "distance"),
    PolicyType.LEAST_USED_DEGRADATION_DPF: ("load", "load_degradation", "load_dpf", "distance"),
}


class TransportUse(IntEnum):
    """Transport-use field of SCTP and TCP transport parameters."""

    DATA_ONLY = 0x0000
    DATA_PLUS_CONTROL = 0x0001


class UpdateAction(IntEnum):
    """ENRP Handle Update actions (RFC 5353)."""

    ADD_PE = 0x0000
    DEL_PE = 0x0001
