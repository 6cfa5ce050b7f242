"""Token-bucket rate limits per write key, counted in messages. Reads no environment."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens per second flow in, up to ``burst``; a message costs one token."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens and return 0, or return the seconds to wait and take nothing."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        # A request larger than the bucket could never pass; it pays a full bucket instead.
        cost = min(cost, self.burst)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


@dataclass
class RateLimiter:
    """One bucket per write key name, created full on first use."""

    rate: float
    burst: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def retry_after(self, key_name: str, messages: int, now: float | None = None) -> int:
        """0 when the messages may pass (and are counted); else whole seconds to wait (>= 1)."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key_name)
        if bucket is None:
            bucket = self.buckets[key_name] = TokenBucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(messages, now)
        return 0 if wait == 0 else max(1, math.ceil(wait))
