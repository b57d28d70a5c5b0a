"""Every table, re-exported so that Alembic and the tests see the whole metadata."""

from service.models.call import Call
from service.models.ledger import EntryKind, LedgerAccount, LedgerEntry
from service.models.pool import PoolClaim, PoolNode
from service.models.proposal import Award, MemberRole, Proposal, ProposalMember, ProposalState
from service.models.run import Artifact, AttemptLogChunk, AttemptState, Run, RunAttempt, RunEvent, RunState
from service.models.user import ApiToken, CredentialKind, LoginFailure, Role, User

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
    "MemberRole",
    "PoolClaim",
    "PoolNode",
    "Proposal",
    "ProposalMember",
    "ProposalState",
    "Role",
    "Run",
    "RunAttempt",
    "RunEvent",
    "RunState",
    "User",
]
