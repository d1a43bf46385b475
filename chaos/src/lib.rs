//! Serv chaos harness: the black-box `serv-chaos` binary starts real `servd` processes, drives
//! them only through S3, STOMP and the admin API, injects faults from a seeded schedule, records
//! every operation in a history, checks it against the invariants of ARCHITECTURE.md and writes a
//! JSON and HTML report. It depends on no Serv crate: it sees the nodes the way a user does.

pub mod check;
pub mod faults;
pub mod history;
pub mod http;
pub mod messages;
pub mod netns;
pub mod nodes;
pub mod report;
pub mod rng;
pub mod run;
pub mod s3;
pub mod schedule;
pub mod stomp;
pub mod worker;
