"""From a trained model to a validated submission CSV, and scoring one against known labels.

``make_submission`` predicts every test image with the model's stored preprocessing and
writes the file in ``sample_submission.csv``'s shape; ``score_submission`` grades it.
"""

from tuning.submission._errors import SubmissionError
from tuning.submission._frame import build_submission, validate_submission, write_submission
from tuning.submission._make import SubmissionResult, make_submission
from tuning.submission._score import ScoreResult, score_submission

__all__ = [
    "ScoreResult",
    "SubmissionError",
    "SubmissionResult",
    "build_submission",
    "make_submission",
    "score_submission",
    "validate_submission",
    "write_submission",
]
