"""Every table, re-exported so that Alembic and the tests see the whole metadata."""

from service.models.call import Call
from service.models.pool import PoolNode
from service.models.proposal import Award, MemberRole, Proposal, ProposalMember, ProposalState
from service.models.run import Artifact, Run, RunState
from service.models.user import ApiToken, CredentialKind, LoginFailure, Role, User

__all__ = [
    "ApiToken",
    "Artifact",
    "Award",
    "Call",
    "CredentialKind",
    "LoginFailure",
    "MemberRole",
    "PoolNode",
    "Proposal",
    "ProposalMember",
    "ProposalState",
    "Role",
    "Run",
    "RunState",
    "User",
]
