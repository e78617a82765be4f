//! The brand's organisation: stores, the staff (导购, shopping guides) who serve
//! customers through WeCom, and which guides have added which customers.

use serde::{Deserialize, Serialize};

/// Where no zone is given, days and quiet hours are Chinese time.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// The brand's store code, e.g. `SH012`.
    pub id: String,
    pub name: String,
    pub city: String,
    /// IANA zone name, e.g. `Asia/Shanghai`.
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// 导购: serves their own customers.
    Guide,
    /// 店长: sees the whole store.
    StoreManager,
    /// Headquarters private-domain operator.
    Operator,
}

impl StaffRole {
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Guide => "guide",
            StaffRole::StoreManager => "store_manager",
            StaffRole::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<StaffRole> {
        match s.trim().to_ascii_lowercase().as_str() {
            "guide" | "导购" => Some(StaffRole::Guide),
            "store_manager" | "manager" | "店长" => Some(StaffRole::StoreManager),
            "operator" | "hq" => Some(StaffRole::Operator),
            _ => None,
        }
    }
}

/// WeCom's default: a member account holds at most 5,000 external contacts.
pub const DEFAULT_CUSTOMER_CAP: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    /// The WeCom member `userid`, which is how callbacks name the guide.
    pub userid: String,
    pub name: String,
    pub store_id: Option<String>,
    pub role: StaffRole,
    /// How many customers this guide may hold.
    pub customer_cap: i64,
}

/// Checks an IANA time zone name (a store's zone), naming the problem if it is not one.
pub fn validate_time_zone(tz: &str) -> Result<(), String> {
    tz.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| format!("{tz:?} is not an IANA time zone such as Asia/Shanghai"))
}
