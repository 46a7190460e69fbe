//! Seeding and inspecting the fake's content (folders, Looks, dashboards, scheduled plans,
//! alerts): see `model/content.rs` for what the API serves.

use super::FakeLooker;
use super::model::{DeliveryView, ItemView};

impl FakeLooker {
    /// The user's personal folder (created on first use), as `User.personal_folder_id` reports it.
    pub fn personal_folder(&self, user_id: &str) -> String {
        self.st().personal_folder(user_id)
    }

    /// A shared folder (e.g. a team's hand-over folder).
    pub fn add_folder(&self, name: &str) -> String {
        self.st().add_folder(name)
    }

    pub fn add_look(&self, user_id: &str, folder_id: &str, title: &str) -> String {
        self.st().add_look(user_id, folder_id, title)
    }

    pub fn add_dashboard(&self, user_id: &str, folder_id: &str, title: &str) -> String {
        self.st().add_dashboard(user_id, folder_id, title)
    }

    /// An enabled scheduled plan of a Look owned by `user_id`, mailing `emails`.
    pub fn add_scheduled_plan(&self, user_id: &str, look_id: &str, emails: &[&str]) -> String {
        self.st().add_scheduled_plan(user_id, look_id, emails)
    }

    /// An enabled alert owned by `owner_id` with an `EMAIL` destination per address.
    pub fn add_alert(&self, owner_id: &str, emails: &[&str]) -> String {
        self.st().add_alert(owner_id, emails)
    }

    pub fn look(&self, id: &str) -> Option<ItemView> {
        self.st().look_view(id)
    }

    pub fn dashboard(&self, id: &str) -> Option<ItemView> {
        self.st().dashboard_view(id)
    }

    /// `None` once deleted (Looker deletes a deleted user's schedules).
    pub fn scheduled_plan(&self, id: &str) -> Option<DeliveryView> {
        self.st().scheduled_plan_view(id)
    }

    pub fn alert(&self, id: &str) -> Option<DeliveryView> {
        self.st().alert_view(id)
    }
}
