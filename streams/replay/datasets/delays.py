"""Click-to-conversion delays with a long tail (Chapelle 2014 on Criteo's logs: about 35% of
conversions within 1 hour, 50% within 24 hours, the rest spread up to 30 days).

A three-part mixture, log-uniform inside each part: [min, 1 h), [1 h, 24 h), [24 h, max_days].
"""

from __future__ import annotations

import numpy as np

from streams.replay.datasets.settings import ConversionDelaySettings

HOUR = 3600.0
DAY = 86400.0


def draw_conversion_delays(rng: np.random.Generator, n: int,
                           settings: ConversionDelaySettings | None = None) -> np.ndarray:
    """``n`` delays in seconds, each in [min_seconds, max_days days]."""
    s = settings or ConversionDelaySettings()
    if not 0.0 <= s.within_hour_share <= s.within_day_share <= 1.0:
        raise ValueError("delay shares must satisfy 0 <= within_hour <= within_day <= 1")
    lo = np.array([s.min_seconds, HOUR, DAY])
    hi = np.array([HOUR, DAY, s.max_days * DAY])
    probs = np.array([s.within_hour_share, s.within_day_share - s.within_hour_share,
                      1.0 - s.within_day_share])
    part = rng.choice(3, size=n, p=probs)
    u = rng.random(n)
    log_lo, log_hi = np.log(lo[part]), np.log(hi[part])
    return np.exp(log_lo + u * (log_hi - log_lo))
