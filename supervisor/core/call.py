"""The shapes the method table is written in: parameters, methods, one call, and what a
method implementation may ask of the service (``Runtime``).

Rule: method implementations see the service only through ``Runtime``; they never
import it, so the table (``methods``) sits below the service that runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from lvmsuper.client.errors import LvmFailed, PermissionDenied

from ..lvm.calls import Lvm
from ..lvm.lockd import Lockd
from . import validate as v
from .auth import Authority, Caller, Role
from .jobs import Job, JobManager
from .opening import Handoff
from .scopes import VgScope, details
from .targets import Plan, Policy, Touches

__all__ = ["Param", "Method", "Call", "Expect", "Runtime", "Handler", "Declare"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Param:
    check: v.Checker
    required: bool = False
    # exactly one parameter of each named group must be given (e.g. "lv" or "lvs")
    one_of: str | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """What must (not) exist for a change to make sense; checked when LVM fails, to
    turn its failure into NotFound / AlreadyExists."""

    kind: str  # "pv" | "vg" | "lv"
    name: str
    exists: bool = True


@dataclass(slots=True)
class Call:
    """One invocation, as the method implementations see it."""

    caller: Caller
    method: Method
    args: dict[str, Any]
    authority: Authority
    plan: Plan | None = None
    job: Job | None = None
    ran: bool = False        # a mutating LVM command was started
    completed: bool = False  # LVM made the change (whatever happens after)
    # the caller's VGs for the method's role (None: all); reads are filtered by it
    scope: VgScope | None = None
    # the tags of the plan's VGs as last read (under the locks, once they are held)
    vg_tags: dict[str, frozenset[str]] = field(default_factory=dict)
    roles: list[Role] = field(default_factory=list)  # roles asked of it beyond its own
    handoff: Handoff | None = None  # a descriptor for the caller (lv_open), until answered

    @property
    def scan(self) -> tuple[str, ...]:
        """``scan_devices`` as resolved at admission: what LVM's scan is limited to."""
        return tuple(d.real for d in self.args.get("scan_devices", ()))

    @property
    def details(self) -> dict[str, str]:
        """What it acts on, as polkit's details."""
        return details(self.method.name, self.args)

    async def require(self, role: Role) -> None:
        """A further role this call needs (``wipe``, a shrink); once planned, on every
        VG the plan touches (within the caller's scope for it, if it has one)."""
        if not await self.authority.allowed(self.caller, role, self.details):
            raise PermissionDenied(f"{self.method.name} as called needs the {role} role",
                                   required=str(role))
        self.roles.append(role)
        if self.plan is not None:
            Policy.check_scope(self.plan, self.authority.scope(self.caller, role), role,
                               self.vg_tags)


class Runtime(Protocol):
    lvm: Lvm
    jobs: JobManager
    lockd: Lockd

    async def read(self, key: Hashable, run: Callable[[], Awaitable[T]],
                   expect: list[Expect]) -> T: ...

    async def lvm_change(self, call: Call, command: str, args: Sequence[str],
                         expect: list[Expect], *, json_log: bool = True) -> None: ...

    async def ensure(self, expect: list[Expect]) -> None: ...

    async def classify(self, exc: LvmFailed | None, expect: list[Expect]) -> Any: ...

    async def status(self) -> dict[str, Any]: ...

    async def refuse_lost(self, vgs: Sequence[str]) -> None: ...

    async def lvm_version(self) -> str: ...

    def position(self) -> dict[str, Any]: ...


Handler = Callable[[Runtime, Call], Awaitable[Any]]
# A change's declaration of what it touches (may also require a further role).
Declare = Callable[[Runtime, Call], Awaitable[Touches]]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    role: Role
    run: Handler
    params: Mapping[str, Param] = field(default_factory=dict)
    declare: Declare | None = None  # set: a change, run as a job under its locks
    # a declared call that runs in its caller's task, not as a job (lv_open: it changes
    # nothing, so it may stop with its caller, and what it yields has one receiver)
    inline: bool = False

    @property
    def declared(self) -> bool:
        """Planned, locked, checked and audited from its declaration (``Touches``)."""
        return self.declare is not None

    @property
    def change(self) -> bool:
        """Runs a mutating LVM command as a job (takes ``wait`` and ``request_id``)."""
        return self.declare is not None and not self.inline
