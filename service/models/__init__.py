"""Every table, re-exported so that Alembic and the tests see the whole metadata."""

from service.models.call import Call
from service.models.ledger import EntryKind, LedgerAccount, LedgerEntry
from service.models.pool import Machine, MachineState, PoolClaim, PoolNode
from service.models.proposal import Award, MemberRole, PriorityClass, Proposal, ProposalMember, ProposalState
from service.models.run import Artifact, AttemptLogChunk, AttemptState, Run, RunAttempt, RunEvent, RunState
from service.models.user import SELF_SERVICE_ROLES, ApiToken, CredentialKind, LoginFailure, Role, User

__all__ = [
    "ApiToken",
    "Artifact",
    "AttemptLogChunk",
    "AttemptState",
    "Award",
    "Call",
    "CredentialKind",
    "EntryKind",
    "LedgerAccount",
    "LedgerEntry",
    "LoginFailure",
    "Machine",
    "MachineState",
    "MemberRole",
    "PoolClaim",
    "PoolNode",
    "PriorityClass",
    "Proposal",
    "ProposalMember",
    "ProposalState",
    "Role",
    "Run",
    "RunAttempt",
    "RunEvent",
    "RunState",
    "SELF_SERVICE_ROLES",
    "User",
]
