//! Background work: the poller.
