//! Consumer groups: the subscriptions that share a topic's messages, each message to one member,
//! with acknowledgements, redelivery and a dead-letter path. [`state`] holds the delivery logic;
//! the group actor that persists it and serves STOMP subscriptions comes with the STOMP edge.

pub mod state;
