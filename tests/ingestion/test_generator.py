"""The event generator writes realistic landing files with the promised defects, reproducibly."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from common.settings import SAMPLE_DIR
from ingestion.generator import GenerateResult, generate, landing_file_name
from ingestion.generator.params import CURRENCIES

START = dt.date(2024, 3, 4)  # a Monday
DAYS = 30
USERS = 1_000
SEED = 11
MESSAGE_TYPES = {"track", "identify", "page", "screen"}


@dataclass(frozen=True)
class Line:
    day: dt.date  # the day of the file it was delivered in
    text: str
    message: dict[str, Any] | None  # None when the line is malformed


@dataclass(frozen=True)
class Run:
    out_dir: Path
    result: GenerateResult
    lines: list[Line]

    @property
    def valid(self) -> list[Line]:
        return [line for line in self.lines if line.message is not None]

    def first_deliveries(self) -> dict[str, Line]:
        """Each distinct valid message as first delivered."""
        first: dict[str, Line] = {}
        for line in self.valid:
            assert line.message is not None
            first.setdefault(line.message["messageId"], line)
        return first


def _instant(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, f"timestamp {text!r} has no UTC offset"
    return parsed


def _contract_break(message: Any) -> str | None:
    """Why a parsed line breaks the loader's contract, or None when it keeps it."""
    if not isinstance(message, dict):
        return "not an object"
    if not (message.get("userId") or message.get("anonymousId")):
        return "no userId or anonymousId"
    try:
        _instant(message["timestamp"])
    except (KeyError, TypeError, ValueError, AssertionError):
        return f"bad timestamp {message.get('timestamp')!r}"
    return None


def _read(out_dir: Path) -> list[Line]:
    lines = []
    for path in sorted(out_dir.glob("events-*.jsonl")):
        day = dt.date.fromisoformat(path.stem.removeprefix("events-"))
        for text in path.read_text().splitlines():
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                message = None
            if _contract_break(message) is not None:
                message = None
            lines.append(Line(day=day, text=text, message=message))
    return lines


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out_dir = tmp_path_factory.mktemp("landing")
    result = generate(out_dir, START, DAYS, USERS, SEED)
    return Run(out_dir=out_dir, result=result, lines=_read(out_dir))


def _share(part: int, whole: int) -> float:
    return part / whole


def test_one_file_per_day_written_atomically(run: Run) -> None:
    expected = [run.out_dir / landing_file_name(START + dt.timedelta(days=d)) for d in range(DAYS)]
    assert run.result.files == expected
    assert expected[0].name == "events-2024-03-04.jsonl"
    assert sorted(run.out_dir.iterdir()) == expected, "no .tmp file may be left behind"
    assert all(path.read_bytes().endswith(b"\n") for path in expected)


def test_counts_add_up(run: Run) -> None:
    result = run.result
    assert result.lines == len(run.lines)
    assert result.lines == result.events + result.duplicates + result.malformed
    assert len(run.first_deliveries()) == result.events
    # 2,000 users over 30 days make 100k-300k events; half as many users, half as many events.
    assert 50_000 <= result.events <= 150_000


def test_same_seed_gives_identical_files(run: Run, tmp_path: Path) -> None:
    again = generate(tmp_path, START, DAYS, USERS, SEED)
    assert again == GenerateResult(
        files=[tmp_path / path.name for path in run.result.files],
        events=run.result.events,
        lines=run.result.lines,
        duplicates=run.result.duplicates,
        late=run.result.late,
        malformed=run.result.malformed,
    )
    for ours, theirs in zip(run.result.files, again.files, strict=True):
        assert ours.read_bytes() == theirs.read_bytes(), f"{theirs.name} differs"


def test_another_seed_gives_other_events(run: Run, tmp_path: Path) -> None:
    other = generate(tmp_path, START, DAYS, USERS, SEED + 1)
    assert run.result.files[0].read_bytes() != other.files[0].read_bytes()
    assert run.result.events != other.events


def test_about_one_percent_duplicate_deliveries(run: Run) -> None:
    copies: dict[str, list[Line]] = defaultdict(list)
    for line in run.valid:
        assert line.message is not None
        copies[line.message["messageId"]].append(line)
    repeated = {key: lines for key, lines in copies.items() if len(lines) > 1}
    extra = sum(len(lines) - 1 for lines in repeated.values())
    assert extra == run.result.duplicates
    assert 0.008 <= _share(extra, len(copies)) <= 0.012
    for lines in repeated.values():
        assert len({line.text for line in lines}) == 1, "a duplicate must be the same line"
        assert (lines[-1].day - lines[0].day).days in (0, 1)
    next_day = sum(1 for lines in repeated.values() if lines[-1].day != lines[0].day)
    assert 0 < next_day < len(repeated) / 2, "duplicates are mostly in the same file"


def test_about_half_a_percent_late_events(run: Run) -> None:
    lateness: Counter[int] = Counter()
    for line in run.first_deliveries().values():
        assert line.message is not None
        utc_date = _instant(line.message["timestamp"]).astimezone(dt.UTC).date()
        lateness[(line.day - utc_date).days] += 1
    late = {days: count for days, count in lateness.items() if days != 0}
    assert set(late) <= {1, 2, 3, 4, 5}, "late events are 1-5 days late, never early"
    assert sum(late.values()) == run.result.late
    assert 0.004 <= _share(run.result.late, run.result.events) <= 0.006


def test_about_a_tenth_of_a_percent_malformed_lines(run: Run) -> None:
    malformed = [line for line in run.lines if line.message is None]
    assert len(malformed) == run.result.malformed
    assert 0.0007 <= _share(len(malformed), len(run.lines)) <= 0.0015
    truncated = 0
    for line in malformed:
        try:
            json.loads(line.text)
        except json.JSONDecodeError:
            truncated += 1
    assert truncated > len(malformed) / 2, "most malformed lines are truncated JSON"
    assert truncated < len(malformed), "some malformed lines are valid JSON breaking the contract"


def test_every_valid_line_keeps_the_contract(run: Run) -> None:
    for line in run.valid:
        message = line.message
        assert message is not None
        assert message["type"] in MESSAGE_TYPES, line.text
        assert isinstance(message["messageId"], str) and len(message["messageId"]) <= 100
        assert None not in message.values(), f"keys without a value are left out: {line.text}"
        if message["type"] == "track":
            assert isinstance(message["event"], str), line.text
            assert isinstance(message["properties"], dict), line.text
        if message["type"] in ("page", "screen"):
            assert isinstance(message["name"], str), line.text
        if message["type"] == "identify":
            assert set(message["traits"]) == {"email", "plan"}, line.text
        timestamp = _instant(message["timestamp"])
        if "sentAt" in message:
            assert _instant(message["sentAt"]) > timestamp, line.text
        zone = message["context"].get("timezone")
        if zone is not None:
            assert timestamp.utcoffset() == ZoneInfo(zone).utcoffset(timestamp), line.text


def test_offsets_vary_and_move_events_across_utc_dates(run: Run) -> None:
    offsets: Counter[str] = Counter()
    other_date = 0
    for line in run.valid:
        assert line.message is not None
        timestamp = _instant(line.message["timestamp"])
        offsets[line.message["timestamp"][23:]] += 1
        other_date += timestamp.date() != timestamp.astimezone(dt.UTC).date()
    assert {"Z", "+05:30", "-05:00", "+09:00"} <= set(offsets)
    assert other_date > len(run.valid) * 0.05, "local dates differ from UTC dates near midnight"


def test_new_users_sign_up_then_use_features_then_order(run: Run) -> None:
    signed_up: dict[str, dt.datetime] = {}
    history: dict[str, list[tuple[dt.datetime, str]]] = defaultdict(list)
    for line in run.first_deliveries().values():
        message = line.message
        assert message is not None
        if message["type"] == "track" and "userId" in message:
            timestamp = _instant(message["timestamp"])
            history[message["userId"]].append((timestamp, message["event"]))
            if message["event"] == "Signed Up":
                signed_up[message["userId"]] = timestamp
    signup_dates = sorted(timestamp.date() for timestamp in signed_up.values())
    assert signup_dates[0] < START + dt.timedelta(days=3)
    assert signup_dates[-1] > START + dt.timedelta(days=DAYS - 3)
    assert 0.4 * USERS < len(signed_up) < 0.8 * USERS

    orders = after_feature = 0
    for user, events in history.items():
        events.sort()
        used_feature = False
        for timestamp, event in events:
            if event == "Order Completed" and user in signed_up:
                assert signed_up[user] < timestamp, f"{user} ordered before signing up"
                orders += 1
                after_feature += used_feature
            used_feature = used_feature or event == "Feature Used"
    assert orders > 100
    assert after_feature / orders > 0.8, "most orders come after using a feature"


def test_anonymous_visits_before_sign_up(run: Run) -> None:
    anonymous = [
        line.message
        for line in run.valid
        if line.message is not None and "userId" not in line.message
    ]
    assert anonymous
    assert {message["type"] for message in anonymous} == {"page", "screen"}


def test_orders_have_revenue_in_several_currencies(run: Run) -> None:
    orders = [
        line.message["properties"]
        for line in run.first_deliveries().values()
        if line.message is not None and line.message.get("event") == "Order Completed"
    ]
    currencies = Counter(order.get("currency") for order in orders)
    assert set(currencies) == {*CURRENCIES, None}, "orders without a currency mean USD"
    total_only = sum("revenue" not in order for order in orders)
    assert all(("revenue" in order) != ("total" in order) for order in orders)
    assert 0.05 < total_only / len(orders) < 0.15
    assert 0.4 < sum("order_id" in order for order in orders) / len(orders) < 0.9

    def median(currency: str) -> float:
        amounts = [
            order.get("revenue", order.get("total"))
            for order in orders
            if order.get("currency") == currency
        ]
        assert all(isinstance(amount, int | float) and amount > 0 for amount in amounts)
        return float(statistics.median(amounts))

    assert 5 < median("USD") < 200
    assert median("JPY") > 30 * median("USD")


def test_weekdays_are_busier_than_weekends(run: Run) -> None:
    per_day: Counter[dt.date] = Counter()
    for line in run.first_deliveries().values():
        assert line.message is not None
        per_day[_instant(line.message["timestamp"]).astimezone(dt.UTC).date()] += 1
    weekday = [count for day, count in per_day.items() if day.weekday() < 5]
    weekend = [count for day, count in per_day.items() if day.weekday() >= 5]
    assert statistics.mean(weekday) > 1.3 * statistics.mean(weekend)


def test_rejects_nonsense_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days=0"):
        generate(tmp_path, START, 0, USERS, SEED)
    with pytest.raises(ValueError, match="users=0"):
        generate(tmp_path, START, DAYS, 0, SEED)


def test_committed_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    sample = SAMPLE_DIR / "events-sample.jsonl"
    result = generate(tmp_path, dt.date(2024, 3, 4), 2, 40, 7)
    written = b"".join(path.read_bytes() for path in result.files)
    assert sample.read_bytes() == written, (
        f"{sample} is stale: rewrite it from generate(dir, date(2024, 3, 4), 2, 40, 7), "
        "the two day files concatenated in order"
    )
    assert result.duplicates and result.late and result.malformed, "the sample shows each defect"
