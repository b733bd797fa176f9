"""What a check reports (:class:`Finding`) and what the checks share (:class:`Context`):
the probe, the configuration, the policy whose words name a missing grant, and the
denials seen so far, which the ``permissions`` check sums up."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..aws.probe import Probe, ProbeError, access_denied, credentials_refused
from ..config import Config
from ..iam import Policy, grant

Status = Literal["ok", "warn", "fail"]
DOCTOR_GRANTS = "add the grants `async-discovery iam-policy --doctor` prints"
CREDENTIALS_FIX = (
    "check which credentials the AWS chain finds (AWS_PROFILE; AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; the role of the function) and that they "
    "belong to this endpoint; an expired session: sign in again (e.g. `aws sso login`)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict: ``found`` says what was seen, ``fix`` what to do (or '')."""

    check: str
    status: Status
    found: str
    fix: str = ""

    def line(self) -> str:
        """The finding as one line of text."""
        text = f"{self.status:<4}  {self.check}: {self.found}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


def failed(findings: list[Finding]) -> bool:
    """True when any check failed (exit status 1)."""
    return any(f.status == "fail" for f in findings)


def report(findings: list[Finding]) -> dict[str, Any]:
    """The machine-readable form (``--output json``, the Lambda's answer)."""
    return {
        "statusCode": 500 if failed(findings) else 200,
        "ok": not failed(findings),
        "checks": [dataclasses.asdict(f) for f in findings],
    }


class Context:
    """What the checks of one run share."""

    def __init__(self, config: Config, probe: Probe, policy: Policy) -> None:
        self.config = config
        self.probe = probe
        self.policy = policy
        self.denied: list[tuple[str, bool]] = []  # (grant in words, needed by a scan)
        self.refused: str | None = None  # the first answer refusing the credentials

    def needs(self, sid: str, action: str | None = None, *, scan: bool = True) -> str:
        """Record a denied call as the grant missing (:func:`~.iam.grant`); its words."""
        text = grant(self.policy, sid, action)
        self.denied.append((text, scan))
        return text

    def failure(self, check: str, exc: BaseException, sid: str, action: str) -> Finding:
        """A failed call of a scan's: a denial named as the grant missing, else the error."""
        if credentials_refused(exc):
            return self.credentials(check, exc)
        if access_denied(exc):
            missing = self.needs(sid, action)
            return Finding(
                check,
                "fail",
                f"denied ({exc})",
                f"grant {missing} (`async-discovery iam-policy` prints the policy)",
            )
        return Finding(check, "fail", str(exc), "a scan would fail the same way: " + hint(exc))

    def broken(self, check: str, exc: BaseException, found: str) -> Finding:
        """A failed call that no grant explains: ``found``, and the fix by :func:`hint`."""
        if credentials_refused(exc):
            return self.credentials(check, exc)
        return Finding(check, "fail", found, hint(exc))

    def credentials(self, check: str, exc: BaseException) -> Finding:
        """A call refused for its credentials: said, with the fix, by the first check
        that meets it; the later ones only point to it (every call fails so)."""
        if self.refused is None:
            self.refused = str(exc)
            return Finding(check, "fail", f"no usable credentials: {exc}", CREDENTIALS_FIX)
        return Finding(check, "fail", "not checked: no usable credentials (above)")


def hint(exc: BaseException) -> str:
    """The fix for a call that failed for another reason than a denial."""
    if isinstance(exc, ProbeError) and exc.missing:
        return "check the bucket or queue name (S3_SOURCE_BUCKET, S3_STATE_BUCKET, SQS_QUEUE_URL)"
    return "check the endpoint and the store's health, then run the doctor again"


def permissions(ctx: Context) -> Finding:
    """Every denial seen: fail for a scan's grant, warn for the doctor's own; fail, not
    known, when the credentials were refused or missing."""
    if ctx.refused is not None:
        return Finding(
            "permissions",
            "fail",
            "not known: without usable credentials no call reached a permission check",
            "fix the credentials (above), then run the doctor again",
        )
    scan = [text for text, needed in ctx.denied if needed]
    extra = [text for text, needed in ctx.denied if not needed]
    if scan:
        return Finding(
            "permissions",
            "fail",
            "a scan needs " + "; ".join(scan),
            "grant them (`async-discovery iam-policy` prints the policy)",
        )
    if extra:
        return Finding(
            "permissions",
            "warn",
            "a scan's calls were allowed; the doctor's own checks need " + "; ".join(extra),
            DOCTOR_GRANTS,
        )
    return Finding("permissions", "ok", "every call was allowed")
