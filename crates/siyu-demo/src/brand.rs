//! The demo brand: 岚山咖啡 Lanshan Coffee, a coffee and tea chain in twelve cities.
//! Stores, guides, menu and customer habits are modelled on the seeds (Luckin-style
//! high-frequency coffee, store communities, guides on WeCom).

use siyu_core::org::{Staff, StaffRole, Store};

use super::rng::Rng;

pub const BRAND: &str = "岚山咖啡 Lanshan Coffee";
/// The brand's mini program (openids are per app).
pub const MINI_PROGRAM_APP_ID: &str = "wx8a3f5c2e1d7b9046";

/// City, stores there, districts (for store names), share of Cantonese speakers.
pub const CITIES: [(&str, &str, u32, &[&str], f64); 12] = [
    ("Shanghai", "SH", 45, &["静安寺", "陆家嘴", "徐家汇", "五角场", "人民广场", "中山公园", "虹桥", "世纪大道", "淮海中路"], 0.03),
    ("Beijing", "BJ", 40, &["国贸", "三里屯", "中关村", "望京", "西单", "五道口", "亦庄", "金融街"], 0.02),
    ("Shenzhen", "SZ", 32, &["福田", "南山", "科技园", "华强北", "宝安中心", "车公庙", "蛇口"], 0.35),
    ("Guangzhou", "GZ", 30, &["天河城", "珠江新城", "北京路", "体育西", "番禺", "琶洲"], 0.65),
    ("Hangzhou", "HZ", 26, &["西湖", "滨江", "未来科技城", "武林", "钱江新城"], 0.02),
    ("Chengdu", "CD", 24, &["春熙路", "太古里", "天府三街", "高新", "宽窄巷子"], 0.01),
    ("Wuhan", "WH", 20, &["光谷", "江汉路", "汉街", "中南"], 0.01),
    ("Nanjing", "NJ", 20, &["新街口", "河西", "夫子庙", "仙林"], 0.01),
    ("Xi'an", "XA", 16, &["小寨", "高新", "钟楼", "曲江"], 0.01),
    ("Suzhou", "SU", 16, &["观前街", "金鸡湖", "园区", "石路"], 0.02),
    ("Chongqing", "CQ", 16, &["解放碑", "观音桥", "南坪", "大学城"], 0.01),
    ("Xiamen", "XM", 15, &["中山路", "软件园", "思明", "集美"], 0.05),
];

const SURNAMES: [&str; 24] =
    ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "林", "罗", "高", "梁", "郑", "谢", "宋"];
const GIVEN: [&str; 40] = [
    "芳", "伟", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "秀英", "霞", "平", "刚", "桂英", "婷", "雪", "慧",
    "欣怡", "子涵", "浩然", "一诺", "梓萱", "宇轩", "雨桐", "思远", "嘉怡", "晨", "悦", "佳琪", "俊杰", "诗涵", "文博",
];
const PINYIN: [&str; 24] = [
    "wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "ma", "zhu", "hu", "guo", "he", "lin", "luo", "gao", "liang",
    "zheng", "xie", "song",
];

pub fn person_name(rng: &mut Rng) -> (String, &'static str) {
    let s = rng.below(SURNAMES.len() as u64) as usize;
    (format!("{}{}", SURNAMES[s], rng.pick(&GIVEN)), PINYIN[s])
}

/// A menu item: sku, name, category, price in fen.
pub struct Item {
    pub sku: &'static str,
    pub name: &'static str,
    pub category: &'static str,
    pub price_fen: i64,
}

pub const MENU: [Item; 14] = [
    Item { sku: "LT-001", name: "生椰拿铁", category: "coffee", price_fen: 2900 },
    Item { sku: "LT-002", name: "拿铁", category: "coffee", price_fen: 2600 },
    Item { sku: "AM-001", name: "美式", category: "coffee", price_fen: 2200 },
    Item { sku: "CB-001", name: "冷萃", category: "coffee", price_fen: 2800 },
    Item { sku: "LT-003", name: "燕麦拿铁", category: "coffee", price_fen: 2900 },
    Item { sku: "LT-004", name: "抹茶拿铁", category: "tea", price_fen: 2800 },
    Item { sku: "TE-001", name: "柠檬茶", category: "tea", price_fen: 1800 },
    Item { sku: "TE-002", name: "茉莉花茶", category: "tea", price_fen: 1600 },
    Item { sku: "TE-003", name: "杨枝甘露", category: "tea", price_fen: 2400 },
    Item { sku: "BN-001", name: "云南小粒咖啡豆 250g", category: "beans", price_fen: 8800 },
    Item { sku: "BN-002", name: "耶加雪菲咖啡豆 250g", category: "beans", price_fen: 12800 },
    Item { sku: "FD-001", name: "可颂", category: "food", price_fen: 1200 },
    Item { sku: "FD-002", name: "芝士贝果", category: "food", price_fen: 1500 },
    Item { sku: "FD-003", name: "提拉米苏", category: "food", price_fen: 2600 },
];

/// Weight of each menu item in orders (coffee dominates; beans are occasional).
pub const MENU_WEIGHTS: [u32; 14] = [18, 16, 14, 8, 10, 6, 7, 4, 5, 2, 1, 5, 3, 2];

pub const TASTES: [(&str, u32); 6] = [("latte", 30), ("americano", 20), ("oat milk", 15), ("cold brew", 10), ("fruit tea", 15), ("matcha", 10)];

/// How a customer first reached the brand: the contact way (渠道活码) they scanned.
pub const CHANNELS: [(&str, u32); 6] =
    [("table_card", 30), ("poster", 12), ("parcel_insert", 10), ("official_account", 18), ("mini_program", 20), ("referral", 10)];

pub const ACTIVITIES: [&str; 4] = ["拉花体验课", "周年庆打卡", "新品品鉴会", "咖啡豆烘焙课"];

pub struct Org {
    pub stores: Vec<Store>,
    pub staff: Vec<Staff>,
    /// Per store (same order as `stores`): the userids of its guides.
    pub guides_by_store: Vec<Vec<String>>,
    /// Per city (same order as `CITIES`): indexes into `stores`.
    pub stores_by_city: Vec<Vec<usize>>,
}

/// 300 stores and about 2,000 staff: a manager and five to seven guides per store.
pub fn organisation(seed: u64) -> Org {
    let mut rng = Rng::for_item(seed, 1, 0);
    let mut org = Org { stores: Vec::new(), staff: Vec::new(), guides_by_store: Vec::new(), stores_by_city: Vec::new() };
    for (city, code, count, districts, _) in CITIES {
        let mut in_city = Vec::new();
        for n in 1..=count {
            let id = format!("{code}{n:03}");
            let district = districts[(n as usize - 1) % districts.len()];
            let branch = (n as usize - 1) / districts.len();
            let name = if branch == 0 { format!("{district}店") } else { format!("{district}{}店", branch + 1) };
            in_city.push(org.stores.len());
            org.stores.push(Store { id: id.clone(), name, city: city.to_string(), time_zone: "Asia/Shanghai".to_string() });
            let mut guides = Vec::new();
            let team = 6 + rng.below(3) as usize;
            for g in 0..team {
                let (name, pinyin) = person_name(&mut rng);
                let userid = format!("{pinyin}.{}{g}", id.to_lowercase());
                let role = if g == 0 { StaffRole::StoreManager } else { StaffRole::Guide };
                if role == StaffRole::Guide {
                    guides.push(userid.clone());
                }
                org.staff.push(Staff { userid, name, store_id: Some(id.clone()), role, customer_cap: 5_000 });
            }
            org.guides_by_store.push(guides);
        }
        org.stores_by_city.push(in_city);
    }
    for (i, name) in ["运营总部-林晓", "运营总部-周航"].iter().enumerate() {
        org.staff.push(Staff { userid: format!("hq.ops{i}"), name: name.to_string(), store_id: None, role: StaffRole::Operator, customer_cap: 5_000 });
    }
    org
}
