//! Publishing changed vectors: user vectors and recent items to the user store as soon as
//! the step that changed them is done (`publish_users`), and every `publish_interval`
//! item vectors and tombstones to the item-vector topic and the popular list, with any
//! user vectors still unpublished (`publish`).

use std::sync::atomic::Ordering;

use tracing::warn;

use super::trainer::OnlineTrainer;
use crate::sink::{ItemUpdate, UserUpdate};

impl OnlineTrainer {
    /// Publishes the vectors and new recent items of the users the last steps changed, in
    /// one pipeline to the user store. A user's fresh vector points at items that are
    /// searchable already or will be with the next item publish; until then the search
    /// simply cannot return the newest ones. A failure keeps the changes for the next
    /// attempt, as `publish` does.
    pub(super) async fn publish_users(&mut self) {
        let Some(learner) = self.learner.as_mut() else {
            return;
        };
        if learner.dirty.users.is_empty() {
            return;
        }
        let model = &learner.model;
        let rows: Vec<u32> = learner.dirty.users.drain().collect();
        let vectors = match model.user_vectors(&rows) {
            Ok(v) => v,
            Err(e) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "cannot compute user vectors; will retry");
                learner.dirty.users.extend(rows);
                return;
            }
        };
        let d = model.dim();
        let mut published_rows = Vec::with_capacity(rows.len());
        let updates: Vec<UserUpdate> = rows
            .iter()
            .zip(vectors.chunks_exact(d))
            .filter_map(|(&row, v)| {
                let user_id = model.user_ids().id(row)?.to_owned();
                published_rows.push(row);
                Some(UserUpdate {
                    user_id,
                    vector: v.to_vec(),
                    new_items: learner.dirty.new_items.remove(&row).unwrap_or_default(),
                })
            })
            .collect();
        let result = self.users.publish(self.cfg.generation, &updates).await;
        if !self.published(result, "user publish") {
            let Some(learner) = self.learner.as_mut() else {
                return;
            };
            learner.dirty.users.extend(rows);
            learner.dirty.restore_new_items(
                published_rows
                    .into_iter()
                    .zip(updates.into_iter().map(|u| u.new_items)),
            );
        }
    }

    /// Counts a publish's outcome and feeds `/readyz` and the publish-delay histogram;
    /// true when it succeeded.
    fn published(&mut self, result: crate::Result<()>, what: &str) -> bool {
        match result {
            Ok(()) => {
                self.stats.publishes.fetch_add(1, Ordering::Relaxed);
                self.stats.health.published(true);
                if let Some(arrived) = self.unpublished_since.take() {
                    self.stats.publish_delay.observe(arrived.elapsed());
                }
                true
            }
            Err(e) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.health.published(false);
                warn!(error = %e, retry = ?e.retry_hint(), "{what} failed; will retry");
                false
            }
        }
    }

    /// Publishes changed vectors. A failing store is logged and counted and the changes
    /// are kept for the next attempt; training goes on.
    pub(super) async fn publish(&mut self) {
        let Some(learner) = self.learner.as_mut() else {
            return;
        };
        if learner.dirty.users.is_empty()
            && learner.dirty.items.is_empty()
            && learner.dirty.hidden.is_empty()
        {
            self.stats.health.published(true);
            return;
        }
        let generation = self.cfg.generation;
        let hidden_rows = learner.hidden_rows();
        let model = &learner.model;
        let user_rows: Vec<u32> = learner.dirty.users.iter().copied().collect();
        let item_rows: Vec<u32> = learner
            .dirty
            .items
            .iter()
            .copied()
            .filter(|row| !hidden_rows.contains(row))
            .collect();
        let (user_vectors, item_vectors) = match (
            model.user_vectors(&user_rows),
            model.item_vectors(&item_rows),
        ) {
            (Ok(u), Ok(i)) => (u, i),
            (Err(e), _) | (_, Err(e)) => {
                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.health.published(false);
                warn!(error = %e, "cannot compute vectors; will retry");
                return;
            }
        };
        let d = model.dim();
        let dirty = std::mem::take(&mut learner.dirty);
        let users: Vec<UserUpdate> = user_rows
            .iter()
            .zip(user_vectors.chunks_exact(d))
            .filter_map(|(&row, v)| {
                Some(UserUpdate {
                    user_id: model.user_ids().id(row)?.to_owned(),
                    vector: v.to_vec(),
                    new_items: dirty.new_items.get(&row).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let items: Vec<ItemUpdate> = item_rows
            .iter()
            .zip(item_vectors.chunks_exact(d))
            .filter_map(|(&row, v)| {
                Some(ItemUpdate {
                    item_id: model.item_ids().id(row)?.to_owned(),
                    vector: v.to_vec(),
                })
            })
            .collect();
        let popular: Vec<(String, f32)> = learner
            .popularity
            .top_k(self.cfg.popular_items, &hidden_rows)
            .into_iter()
            .filter_map(|(row, s)| Some((model.item_ids().id(row)?.to_owned(), s)))
            .collect();
        // Items before the users still unpublished: their vectors may point at them.
        let removed: Vec<String> = dirty.hidden.iter().cloned().collect();
        let result = async {
            self.items.publish_items(generation, items).await?;
            if !removed.is_empty() {
                self.items.remove_items(removed).await?;
            }
            self.items.publish_popular(generation, popular).await?;
            self.users.publish(generation, &users).await
        }
        .await;
        if !self.published(result, "publish") {
            let Some(learner) = self.learner.as_mut() else {
                return;
            };
            learner.dirty.users.extend(dirty.users);
            learner.dirty.items.extend(dirty.items);
            // Still hidden ones only: an item shown again meanwhile needs no tombstone.
            let still_hidden = &learner.hidden;
            learner.dirty.hidden.extend(
                dirty
                    .hidden
                    .into_iter()
                    .filter(|id| still_hidden.contains(id)),
            );
            learner.dirty.restore_new_items(dirty.new_items);
        }
    }
}
