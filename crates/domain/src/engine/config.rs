//! Engine settings and configuration: channels and the catalogue, replicated to every shard.
//!
//! Configuration commands go to every shard in the same order, so every engine holds the
//! same channels, products and categories; the lookups here serve every operation.

use super::Engine;
use crate::Millis;
use crate::channel::{CategoryConfig, Channel, ChannelConfig, ProductConfig};
use crate::error::Error;
use crate::limits::{
    HOLD_RETENTION_MS_DEFAULT, TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX, TTL_SECONDS_MIN,
};
use crate::refs::Sym;

/// Engine-wide settings, the same on every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Hold timer when neither request, product, category nor channel sets one.
    pub ttl_default_seconds: u32,
    /// Requested timers below this are raised to it.
    pub ttl_min_seconds: u32,
    /// Requested timers above this are lowered to it.
    pub ttl_max_seconds: u32,
    /// How long a finished hold (released, expired, or confirmed and closed) is kept so
    /// that GetHold and idempotent retries still answer. Bounds memory under churn.
    pub hold_retention_ms: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl_default_seconds: TTL_SECONDS_DEFAULT,
            ttl_min_seconds: TTL_SECONDS_MIN,
            ttl_max_seconds: TTL_SECONDS_MAX,
            hold_retention_ms: HOLD_RETENTION_MS_DEFAULT,
        }
    }
}

/// A product's catalogue entry, interned.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProductEntry {
    pub category: Option<Sym>,
    pub ttl_seconds: Option<u32>,
}

impl Engine {
    /// Creates or replaces a channel.
    pub fn upsert_channel(&mut self, config: ChannelConfig) -> Result<(), Error> {
        config.validate_request()?;
        let interner = &mut self.interner;
        let channel = Channel::compile(config, &mut |s| interner.intern(s));
        match self.channels.iter_mut().find(|c| c.sym == channel.sym) {
            Some(slot) => *slot = channel,
            None => self.channels.push(channel),
        }
        self.checkpoint.config = true;
        self.channels
            .sort_by(|a, b| a.config.channel_ref.cmp(&b.config.channel_ref));
        Ok(())
    }

    /// Removes a channel. Its holds stay until they end; it can sell no more.
    pub fn delete_channel(&mut self, channel_ref: &str) -> Result<(), Error> {
        let before = self.channels.len();
        self.channels
            .retain(|c| c.config.channel_ref != channel_ref);
        if self.channels.len() == before {
            return Err(Error::UnknownChannel(channel_ref.to_string()));
        }
        self.drop_network(channel_ref);
        self.checkpoint.config = true;
        Ok(())
    }

    /// The configured channels, by ref.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelConfig> {
        self.channels.iter().map(|c| &c.config)
    }

    /// Creates or replaces catalogue entries.
    pub fn upsert_products(&mut self, products: &[ProductConfig]) -> Result<(), Error> {
        ProductConfig::validate_all(products)?;
        self.checkpoint.config = true;
        for p in products {
            let sym = self.interner.intern(&p.product_ref);
            let category = p.category.as_deref().map(|c| self.interner.intern(c));
            self.products.insert(
                sym,
                ProductEntry {
                    category,
                    ttl_seconds: p.hold_ttl_seconds,
                },
            );
        }
        Ok(())
    }

    /// Creates or replaces category timers.
    pub fn upsert_categories(&mut self, categories: &[CategoryConfig]) -> Result<(), Error> {
        CategoryConfig::validate_all(categories)?;
        self.checkpoint.config = true;
        for c in categories {
            let sym = self.interner.intern(&c.category);
            match c.hold_ttl_seconds {
                Some(ttl) => self.categories.insert(sym, ttl),
                None => self.categories.remove(&sym),
            };
        }
        Ok(())
    }

    /// The catalogue, for listing and snapshots.
    pub fn products(&self) -> Vec<ProductConfig> {
        let mut out: Vec<ProductConfig> = self
            .products
            .iter()
            .map(|(sym, p)| ProductConfig {
                product_ref: self.interner.resolve(*sym).to_string(),
                category: p.category.map(|c| self.interner.resolve(c).to_string()),
                hold_ttl_seconds: p.ttl_seconds,
            })
            .collect();
        out.sort_by(|a, b| a.product_ref.cmp(&b.product_ref));
        out
    }

    /// Category timers, for listing and snapshots.
    pub fn categories(&self) -> Vec<CategoryConfig> {
        let mut out: Vec<CategoryConfig> = self
            .categories
            .iter()
            .map(|(sym, ttl)| CategoryConfig {
                category: self.interner.resolve(*sym).to_string(),
                hold_ttl_seconds: Some(*ttl),
            })
            .collect();
        out.sort_by(|a, b| a.category.cmp(&b.category));
        out
    }

    pub(super) fn channel_index(&self, channel_ref: &str) -> Result<usize, Error> {
        self.channels
            .iter()
            .position(|c| c.config.channel_ref == channel_ref)
            .ok_or_else(|| Error::UnknownChannel(channel_ref.to_string()))
    }

    pub(super) fn category_of(&self, product: Sym, hint: Option<Sym>) -> Option<Sym> {
        self.products
            .get(&product)
            .and_then(|p| p.category)
            .or(hint)
    }
}
