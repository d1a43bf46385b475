//! Serv chaos harness (to come with the [chaos] issue): the black-box `serv-chaos` binary that
//! starts real `servd` processes, drives them only through S3, STOMP and the admin API, injects
//! faults from a seeded schedule, records every operation in a history and checks it against the
//! invariants of ARCHITECTURE.md, writing a JSON and HTML report.
