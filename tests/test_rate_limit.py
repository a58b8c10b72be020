"""smg.rate_limit: token buckets and a key's limits (time read from the clock; rates large enough
that the test's own pace does not refill them meaningfully)."""
import pytest

from smg.errors import Overloaded
from smg.rate_limit import KeyLimits, TokenBucket

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)


def test_a_bucket_takes_until_empty_and_says_when_it_has_more():
    bucket = TokenBucket(60)  # one a second
    assert all(bucket.take() == 0.0 for _ in range(60))
    wait = bucket.take()
    assert 0.9 < wait <= 1.0
    bucket.charge(120)
    assert 119 < bucket.in_debt() <= 121  # empty, then 120 in debt: two minutes


def test_a_keys_limits():
    limits = KeyLimits("k", requests_per_minute=2, tokens_per_minute=100)
    limits.admit()
    limits.admit()
    with pytest.raises(Overloaded, match="requests per minute") as over:
        limits.admit()
    assert 29 < over.value.retry_after <= 30
    tokens = KeyLimits("t", None, tokens_per_minute=100)
    tokens.admit()
    tokens.charge(150)  # one request's worth of debt
    with pytest.raises(Overloaded, match="tokens per minute") as debt:
        tokens.admit()
    assert 29 < debt.value.retry_after <= 31
    KeyLimits("free", None, None).admit()  # no limits: never refused
