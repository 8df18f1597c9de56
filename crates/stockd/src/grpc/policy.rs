//! The access policy (`--auth-policy`): which identities may call which methods, and for
//! which channels.
//!
//! ```toml
//! [[identities]]
//! name = "spiffe://cluster.local/ns/shop/sa/social-storefront"
//! methods = ["inventory.v1.InventoryService/GetAvailability", "inventory.v1.InventoryService/Reserve"]
//! channels = ["SOCIAL"]
//!
//! [[identities]]
//! name = "warehouse-feed"
//! methods = ["inventory.v1.AdminService/SetStock", "inventory.v1.AdminService/AdjustStock"]
//!
//! [[identities]]
//! name = "operator"
//! methods = ["inventory.v1.AdminService/*", "inventory.v1.InventoryService/*"]
//! ```
//!
//! An identity not listed is unknown (UNAUTHENTICATED); a method not in its list, or a
//! channel not in its `channels` (when it has the key), is refused (PERMISSION_DENIED).
//! `Service/*` allows every method of a service. Every method must exist in the API's
//! descriptors, so a typo is refused when the file is loaded, not silently never matched.
//! Health and reflection are outside the policy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message;
use serde::Deserialize;

/// What the file says, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    identities: Vec<IdentityEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityEntry {
    name: String,
    methods: Vec<String>,
    channels: Option<Vec<String>>,
}

/// What one identity may do.
#[derive(Debug)]
pub struct Grant {
    /// `package.Service/Method` entries.
    methods: HashSet<String>,
    /// Services whose every method is allowed (`package.Service/*`).
    services: HashSet<String>,
    /// The channels it may use; `None`: every channel.
    pub channels: Option<Arc<HashSet<String>>>,
}

impl Grant {
    /// Whether `service`'s `method` is allowed.
    pub fn allows(&self, service: &str, method: &str) -> bool {
        self.services.contains(service) || self.methods.contains(&format!("{service}/{method}"))
    }
}

/// The policy: identity name → what it may do.
#[derive(Debug, Default)]
pub struct Policy {
    grants: HashMap<String, Grant>,
}

impl Policy {
    /// The grant of the first of `names` the policy knows, with that name.
    pub fn grant<'a>(&'a self, names: &'a [impl AsRef<str>]) -> Option<(&'a str, &'a Grant)> {
        names.iter().find_map(|n| {
            let n = n.as_ref();
            self.grants.get(n).map(|g| (n, g))
        })
    }

    /// Parses and checks a policy file's contents.
    pub fn parse(text: &[u8]) -> Result<Policy, String> {
        let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let known = api_methods();
        let mut grants = HashMap::new();
        for (i, entry) in file.identities.into_iter().enumerate() {
            let at = |why: String| format!("identities[{i}] ({}): {why}", entry.name);
            let mut grant = Grant {
                methods: HashSet::new(),
                services: HashSet::new(),
                channels: entry.channels.map(|c| Arc::new(c.into_iter().collect())),
            };
            for m in &entry.methods {
                let (service, method) = m
                    .split_once('/')
                    .ok_or_else(|| at(format!("method {m:?} is not `package.Service/Method`")))?;
                if method == "*" && known.iter().any(|k| k.0 == service) {
                    grant.services.insert(service.to_string());
                } else if known.contains(&(service.to_string(), method.to_string())) {
                    grant.methods.insert(m.clone());
                } else {
                    return Err(at(format!("method {m:?} is not in the API")));
                }
            }
            if grants.insert(entry.name.clone(), grant).is_some() {
                return Err(at("the name is listed twice".into()));
            }
        }
        Ok(Policy { grants })
    }
}

/// Every (service, method) of the API, from the descriptors reflection serves.
fn api_methods() -> HashSet<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
        .expect("the build encodes a valid descriptor set");
    let mut methods = HashSet::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let name = format!("{package}.{}", service.name.unwrap_or_default());
            for method in service.method {
                methods.insert((name.clone(), method.name.unwrap_or_default()));
            }
        }
    }
    methods
}
