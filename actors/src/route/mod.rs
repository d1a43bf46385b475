//! The gateway route entity: the durable config of one route (what it matches, where it sends,
//! how it is guarded) and whether it is enabled. Every change goes through the route's actor;
//! the HTTP gateway on every node serves from a snapshot of all routes it refreshes (see
//! `serv_edges::gateway`), so a change reaches every node within one refresh.

mod model;

use serv_storage::Table;

pub use model::*;

use crate::{Entity, EntityContext, EntityError, now_ms};

/// A route's actor. A name without a stored route loads as absent.
pub struct Route {
    name: String,
    record: Option<RouteRecord>,
    routes: Table<String, RouteRecord>,
}

impl Route {
    async fn store(&mut self, record: RouteRecord, ctx: &EntityContext) -> Result<RouteReply, EntityError> {
        let mut changes = ctx.storage.write_set();
        changes.put(&self.routes, &self.name, &record)?;
        ctx.storage.commit(changes).await?;
        self.record = Some(record.clone());
        Ok(RouteReply::Route(Box::new(record)))
    }
}

impl Entity for Route {
    type Msg = RouteMsg;

    async fn load(ctx: &EntityContext) -> Result<Self, EntityError> {
        let routes = ctx.storage.table(ROUTES)?;
        let record = routes.get(&ctx.key.name)?;
        Ok(Route { name: ctx.key.name.clone(), record, routes })
    }

    async fn handle(&mut self, msg: RouteMsg, ctx: &EntityContext) -> Result<RouteReply, EntityError> {
        match (msg, self.record.clone()) {
            (RouteMsg::Put(config), existing) => {
                if let Err(reason) = validate(&config) {
                    return Ok(RouteReply::Refused(RouteRefusal::Invalid(reason)));
                }
                let now = now_ms();
                let config = *config;
                let record = match existing {
                    Some(old) => RouteRecord { config, updated_ms: now, ..old },
                    None => RouteRecord { config, enabled: true, created_ms: now, updated_ms: now },
                };
                self.store(record, ctx).await
            }
            (_, None) => Ok(RouteReply::Refused(RouteRefusal::NoSuchRoute)),
            (RouteMsg::Get, Some(record)) => Ok(RouteReply::Route(Box::new(record))),
            (RouteMsg::SetEnabled(enabled), Some(old)) => {
                if old.enabled == enabled {
                    return Ok(RouteReply::Route(Box::new(old)));
                }
                self.store(RouteRecord { enabled, updated_ms: now_ms(), ..old }, ctx).await
            }
            (RouteMsg::Delete, Some(_)) => {
                let mut changes = ctx.storage.write_set();
                changes.delete(&self.routes, &self.name);
                ctx.storage.commit(changes).await?;
                self.record = None;
                Ok(RouteReply::Deleted)
            }
        }
    }

    fn summary(&self) -> String {
        match &self.record {
            None => crate::inspect::ABSENT.into(),
            Some(record) => {
                let target = match &record.config.topic {
                    Some(topic) => format!("topic={topic}"),
                    None => format!("upstreams={}", record.config.upstreams.len()),
                };
                let switch = if record.enabled { "enabled" } else { "disabled" };
                format!("{switch} prefix={} {target}", record.config.path_prefix)
            }
        }
    }
}

#[cfg(test)]
mod tests;
