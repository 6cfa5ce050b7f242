"""The generator's parameters: the product it simulates and the shares of every defect.

The shares and weights here are what the tests of ``tests/ingestion/test_generator.py`` hold
the generated files to; changing one changes the bytes every seed writes.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SECOND_MS = 1_000

DUPLICATE_SHARE = 0.01
DUPLICATE_NEXT_DAY_SHARE = 0.2
LATE_SHARE = 0.005
MAX_LATE_DAYS = 5
MALFORMED_SHARE = 0.001
# Truncated JSON, valid JSON without userId and anonymousId, a timestamp that is no timestamp.
TRUNCATED, NO_IDS, BAD_TIMESTAMP = range(3)
MALFORMED_KIND_WEIGHTS = (0.7, 0.15, 0.15)
BAD_TIMESTAMPS = ("not a timestamp", "", "2024-02-30T25:61:00Z", "yesterday")
SENT_AT_SHARE = 0.9

MESSAGE_TYPES = ("track", "identify", "page", "screen")
TRACK, IDENTIFY, PAGE, SCREEN = range(4)
IDENTIFY_SHARE = 0.004
VIEW_SHARE = 0.44

EVENTS = (
    "Signed Up",
    "Feature Used",
    "Report Viewed",
    "Dashboard Created",
    "Invite Sent",
    "Order Completed",
)
SIGNED_UP, FEATURE_USED, REPORT_VIEWED, DASHBOARD_CREATED, INVITE_SENT, ORDER_COMPLETED = range(6)
# Track events other than sign-ups and orders, and how often each occurs.
IN_APP_EVENTS = (FEATURE_USED, REPORT_VIEWED, DASHBOARD_CREATED, INVITE_SENT)
IN_APP_EVENT_WEIGHTS = (0.45, 0.3, 0.13, 0.12)
FEATURES = ("export", "sql_editor", "alerts", "sharing", "api", "annotations")
REPORTS = ("retention", "funnel", "revenue", "cohorts", "activation")
SIGNUP_METHODS = ("email", "google", "github")

PAGES = ("Home", "Pricing", "Sign Up", "Dashboard", "Reports", "Settings", "Docs", "Billing")
PAGE_PATHS = (
    "/",
    "/pricing",
    "/signup",
    "/app",
    "/app/reports",
    "/app/settings",
    "/docs",
    "/billing",
)
LANDING_PAGE_WEIGHTS = (0.45, 0.35, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0)
APP_PAGE_WEIGHTS = (0.02, 0.03, 0.0, 0.4, 0.3, 0.1, 0.1, 0.05)
SITE_URL = "https://app.example.com"

PLANS = ("free", "pro", "team")
PLAN_WEIGHTS = (0.6, 0.3, 0.1)
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD")
# The last weight is for orders without a currency, which means USD.
CURRENCY_WEIGHTS = (0.5, 0.15, 0.1, 0.06, 0.07, 0.12)
JPY = CURRENCIES.index("JPY")
MEDIAN_ORDER_AMOUNT = 39.0
TOTAL_ONLY_SHARE = 0.1
ORDER_ID_SHARE = 0.7


@dataclass(frozen=True)
class _Zone:
    name: str
    offset_minutes: int
    weight: float

    @property
    def utc_offset(self) -> str:
        if self.offset_minutes == 0:
            return "Z"
        sign = "+" if self.offset_minutes > 0 else "-"
        hours, minutes = divmod(abs(self.offset_minutes), 60)
        return f"{sign}{hours:02d}:{minutes:02d}"


# Zones without daylight saving time, so one offset per user is the truth all year.
ZONES = (
    _Zone("UTC", 0, 0.10),
    _Zone("Africa/Lagos", 60, 0.08),
    _Zone("Africa/Johannesburg", 120, 0.10),
    _Zone("Asia/Kolkata", 330, 0.12),
    _Zone("Asia/Kathmandu", 345, 0.02),
    _Zone("Asia/Singapore", 480, 0.08),
    _Zone("Asia/Tokyo", 540, 0.08),
    _Zone("Australia/Brisbane", 600, 0.05),
    _Zone("America/Sao_Paulo", -180, 0.08),
    _Zone("America/Bogota", -300, 0.14),
    _Zone("America/Phoenix", -420, 0.11),
    _Zone("Pacific/Honolulu", -600, 0.04),
)

# Web users send page views, mobile users screen views; orders are sent by the backend.
LIBRARIES = (
    ("analytics.js", "next-1.70.0"),
    ("analytics-ios", "4.1.8"),
    ("analytics-android", "4.11.3"),
    ("analytics-python", "2.3.2"),
)
WEB, IOS, ANDROID, SERVER = range(4)
PLATFORM_WEIGHTS = (0.65, 0.2, 0.15)

# Relative volume by local hour of day, and by weekday (Monday first).
HOURLY_VOLUME = (
    *(0.12, 0.08, 0.05, 0.04, 0.04, 0.07, 0.18, 0.4, 0.75, 1.0, 1.1, 1.1),
    *(1.0, 1.05, 1.1, 1.05, 1.0, 0.9, 0.8, 0.75, 0.7, 0.55, 0.4, 0.25),
)
WEEKLY_VOLUME = (1.0, 1.05, 1.05, 1.0, 0.9, 0.5, 0.45)

EXISTING_USER_SHARE = 0.35
QUICK_CHURN_SHARE = 0.2
QUICK_CHURN_MEAN_DAYS = 2.0
MEAN_LIFETIME_DAYS = 60.0
BUYER_SHARE = 0.45
EXTRA_SESSIONS_PER_DAY = 0.6
MEDIAN_EVENTS_PER_SESSION = 6.0
EVENT_GAP_MS = 40 * SECOND_MS
PRE_SIGNUP_EXTRA_VIEWS = 1.5
ACTIVATION_SHARE = 0.7
# Activity this soon after signing up is replaced by the sign-up messages themselves.
SIGNUP_QUIET_MS = 2 * SECOND_MS
# Most orders placed before any Feature Used become one, so most buyers used a feature first.
ORPHAN_ORDER_FIX_SHARE = 0.85
