//! Unit tests of the control client: translation, retention, NACK reasons.
