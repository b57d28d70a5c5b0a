"""Every table, re-exported so that Alembic and the tests see the whole metadata."""

from service.models.archive import ArchiveProduct
from service.models.audit import AuditEntry, OutboxMessage, ProposalEvent
from service.models.call import DIRECTOR_RESERVE_LIMIT, Call, CallKind, Cycle
from service.models.dataset import DatasetPartition, DatasetVersion
from service.models.ledger import AwardReminder, EntryKind, LedgerAccount, LedgerEntry
from service.models.mark import PairMark, Verdict
from service.models.model_version import ModelVersion
from service.models.pool import DonorShare, Machine, MachineState, PoolClaim, PoolNode, VolunteerCredit
from service.models.proposal import (
    Award,
    ChangeRequest,
    ChangeState,
    MemberRole,
    Outcome,
    OutcomeKind,
    PriorityClass,
    Proposal,
    ProposalMember,
    ProposalState,
)
from service.models.review import (
    AssignmentChoice,
    AssignmentState,
    Bid,
    Expertise,
    ProposalInvite,
    Review,
    ReviewAssignment,
    ReviewBid,
    ReviewRating,
)
from service.models.rounds import RoundContribution, TrainingRound
from service.models.run import (
    Artifact,
    AttemptLogChunk,
    AttemptState,
    Run,
    RunAttempt,
    RunEvent,
    RunGroup,
    RunState,
)
from service.models.user import SELF_SERVICE_ROLES, ApiToken, CredentialKind, LoginFailure, Role, User
from service.models.withdrawal import Withdrawal, WithdrawalReason

__all__ = [
    "AwardReminder",
    "AssignmentChoice",
    "Bid",
    "ReviewBid",
    "ChangeRequest",
    "ChangeState",
    "ArchiveProduct",
    "VolunteerCredit",
    "DonorShare",
    "RoundContribution",
    "TrainingRound",
    "Verdict",
    "DatasetPartition",
    "RunGroup",
    "Withdrawal",
    "WithdrawalReason",
    "ApiToken",
    "Artifact",
    "AssignmentState",
    "AttemptLogChunk",
    "AttemptState",
    "AuditEntry",
    "Award",
    "Call",
    "CallKind",
    "CredentialKind",
    "Cycle",
    "DatasetVersion",
    "DIRECTOR_RESERVE_LIMIT",
    "EntryKind",
    "Expertise",
    "LedgerAccount",
    "LedgerEntry",
    "LoginFailure",
    "Machine",
    "PairMark",
    "MachineState",
    "MemberRole",
    "ModelVersion",
    "OutboxMessage",
    "PoolClaim",
    "PoolNode",
    "PriorityClass",
    "Proposal",
    "Outcome",
    "OutcomeKind",
    "ProposalEvent",
    "ProposalInvite",
    "ProposalMember",
    "ProposalState",
    "Review",
    "ReviewAssignment",
    "ReviewRating",
    "Role",
    "Run",
    "RunAttempt",
    "RunEvent",
    "RunState",
    "SELF_SERVICE_ROLES",
    "User",
]
