//! Deterministic tenant generator: realistic users, groups, devices, org contacts and photos from a seed.
//!
//! Realistic means what breaks naive directory code: non-ASCII names (Müller, Łukasz, Ørsted), display names with
//! commas, `+`, quotes or a leading `#` (DN escaping), duplicate display names, phone numbers in every format
//! people type (national, international, `00` prefix, extensions, foreign, garbage), guests with `#EXT#` UPNs,
//! disabled accounts, hybrid users with `onPremisesSamAccountName`, managers, nested groups and groups whose
//! members are devices, contacts and service principals. The same options always give the same tenant.

use std::collections::{HashMap, HashSet};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::tenant::Tenant;
use super::{jpeg, names};
use crate::model::{GraphKind, MemberRef};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub users: usize,
    pub groups: usize,
    pub devices: usize,
    pub contacts: usize,
    pub seed: u64,
    /// Share of users with a photo, 0.0 to 1.0.
    pub photo_ratio: f64,
    /// Verified domain for UPNs and mail, e.g. `contoso.example`.
    pub domain: String,
}

/// Function accounts (shared mailboxes, rooms): the display names that stress DN escaping.
const FUNCTION_ACCOUNTS: &[&str] = &[
    "Empfang + Zentrale",
    "Hotline+Service",
    "Konferenzraum Berlin, 3. OG",
    "Buchhaltung, Team",
    "#Support",
    "Lobby \"Nord\"",
    "Lager <West>",
    "Back\\Office",
    "Kasse; Filiale 2",
    "IT = Helpdesk",
    " Leerzeichen vorne",
];

const DEPARTMENTS: &[&str] = &[
    "Vertrieb",
    "Marketing",
    "Entwicklung",
    "R&D",
    "Finance",
    "Buchhaltung",
    "Personal (HR)",
    "IT",
    "Support",
    "Einkauf",
    "Logistik",
    "Geschäftsführung",
    "Legal, Compliance",
    "Produktion",
];

const TITLES: &[&str] = &[
    "Sachbearbeiter/in",
    "Account Manager",
    "Software Engineer",
    "Teamleiter",
    "Head of Sales",
    "Werkstudent",
    "Support Engineer",
    "Buchhalterin",
    "Einkäufer",
    "Lagerist",
    "Projektmanagerin",
    "Assistenz der Geschäftsführung",
    "Senior Consultant",
    "Auszubildende",
];

struct Office {
    name: &'static str,
    street: &'static str,
    postal: &'static str,
    city: &'static str,
    state: &'static str,
    country: &'static str,
    usage: &'static str,
    /// Country calling code and area code, for phone numbers.
    cc: &'static str,
    area: &'static str,
}

const OFFICES: &[Office] = &[
    Office {
        name: "Berlin HQ",
        street: "Friedrichstraße 123",
        postal: "10117",
        city: "Berlin",
        state: "Berlin",
        country: "Germany",
        usage: "DE",
        cc: "49",
        area: "30",
    },
    Office {
        name: "München",
        street: "Leopoldstraße 45",
        postal: "80802",
        city: "München",
        state: "Bayern",
        country: "Deutschland",
        usage: "DE",
        cc: "49",
        area: "89",
    },
    Office {
        name: "Hamburg",
        street: "Große Elbstraße 12",
        postal: "22767",
        city: "Hamburg",
        state: "Hamburg",
        country: "Germany",
        usage: "DE",
        cc: "49",
        area: "40",
    },
    Office {
        name: "Köln",
        street: "Hohenzollernring 7",
        postal: "50672",
        city: "Köln",
        state: "Nordrhein-Westfalen",
        country: "Germany",
        usage: "DE",
        cc: "49",
        area: "221",
    },
    Office {
        name: "Frankfurt",
        street: "Mainzer Landstraße 50",
        postal: "60325",
        city: "Frankfurt am Main",
        state: "Hessen",
        country: "Germany",
        usage: "DE",
        cc: "49",
        area: "69",
    },
    Office {
        name: "Wien",
        street: "Mariahilfer Straße 1",
        postal: "1060",
        city: "Wien",
        state: "Wien",
        country: "Austria",
        usage: "AT",
        cc: "43",
        area: "1",
    },
    Office {
        name: "Redmond",
        street: "1 Main Street",
        postal: "98052",
        city: "Redmond",
        state: "WA",
        country: "United States",
        usage: "US",
        cc: "1",
        area: "425",
    },
];

const PARTNER_DOMAINS: &[&str] = &[
    "fabrikam.example",
    "adatum.example",
    "northwind.example",
    "gmail.example",
];
const PARTNER_COMPANIES: &[&str] = &[
    "Fabrikam GmbH",
    "Adatum AG",
    "Northwind Traders",
    "Lieferant & Co. KG",
    "Tailspin Toys, Inc.",
    "Müller Elektrotechnik",
];

const GROUP_NAMES: &[&str] = &[
    "R+D Team",
    "Support, 2nd Level",
    "Außendienst Süd",
    "Équipe Paris",
    "Projekt \"Phoenix\"",
    "#general",
    "Betriebsrat",
    "VPN-Users",
    "Printers Berlin",
    "Mobile Devices",
    "Externe Partner",
    "Hotline <Nacht>",
    "Lizenz E5",
    "Kantine; Küche",
    "Führungskräfte",
    "Ersthelfer",
    "Brandschutzhelfer",
    "Azubis 2024",
    "Wi-Fi Zugang",
    "Telefonie-Admins",
];

/// Builds a fresh tenant from the options.
pub fn generate(opts: &GenOptions) -> Tenant {
    Generator::new(opts).run()
}

struct Generator<'a> {
    opts: &'a GenOptions,
    rng: SmallRng,
    tenant: Tenant,
    upns: HashSet<String>,
    /// Next numeric suffix to try per UPN, so 100k users with few distinct names stay linear.
    upn_next: HashMap<String, usize>,
    /// Initial domain for guests' `#EXT#` UPNs, e.g. `contoso.onmicrosoft.com`.
    initial_domain: String,
    users: Vec<UserInfo>,
    devices: Vec<String>,
    contacts: Vec<String>,
}

struct UserInfo {
    id: String,
    given: String,
    member: bool,
    enabled: bool,
    department: &'static str,
}

/// Insert helper: `Map` from a `json!` object literal.
fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// ASCII for mail addresses: German transliteration for umlauts, accents dropped, the rest removed.
pub fn ascii_fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let rep: &str = match c {
            'ä' => "ae",
            'ö' => "oe",
            'ü' => "ue",
            'Ä' => "Ae",
            'Ö' => "Oe",
            'Ü' => "Ue",
            'ß' => "ss",
            'æ' => "ae",
            'ø' | 'ó' | 'ò' | 'ô' | 'õ' | 'ő' => "o",
            'Ø' | 'Ó' => "O",
            'å' | 'á' | 'à' | 'â' | 'ã' | 'ą' => "a",
            'Å' | 'Á' => "A",
            'ł' => "l",
            'Ł' => "L",
            'ś' | 'ş' | 'š' => "s",
            'Ś' | 'Ş' | 'Š' => "S",
            'ń' | 'ñ' => "n",
            'ż' | 'ź' | 'ž' => "z",
            'ć' | 'č' | 'ç' => "c",
            'é' | 'è' | 'ê' | 'ë' | 'ę' | 'ễ' | 'ě' => "e",
            'É' | 'È' => "E",
            'í' | 'ì' | 'î' | 'ï' | 'ı' => "i",
            'ú' | 'ù' | 'û' | 'ű' | 'ů' => "u",
            'ř' => "r",
            'ý' => "y",
            'ğ' => "g",
            'đ' => "d",
            'Đ' => "D",
            c if c.is_ascii_alphanumeric() || c == '-' => {
                out.push(c);
                continue;
            }
            _ => "",
        };
        out.push_str(rep);
    }
    out
}

fn local_part(given: &str, surname: &str) -> String {
    format!("{}.{}", ascii_fold(given), ascii_fold(surname)).to_lowercase()
}

/// Entra derives cloud SIDs from the object id: `S-1-12-1-` and the GUID's bytes as four little-endian u32.
fn sid_for(id: &uuid::Uuid) -> String {
    let b = id.to_bytes_le();
    let part = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    format!("S-1-12-1-{}-{}-{}-{}", part(0), part(4), part(8), part(12))
}

/// A timestamp in 2019..2024, for `createdDateTime` and friends (deterministic, never "now").
fn past(rng: &mut SmallRng) -> String {
    iso8601(1_546_300_800 + rng.gen_range(0..5 * 365 * 86_400))
}

impl<'a> Generator<'a> {
    fn new(opts: &'a GenOptions) -> Self {
        let label = opts.domain.split('.').next().unwrap_or("contoso");
        Generator {
            opts,
            rng: SmallRng::seed_from_u64(opts.seed),
            tenant: Tenant::default(),
            upns: HashSet::new(),
            upn_next: HashMap::new(),
            initial_domain: format!("{label}.onmicrosoft.com"),
            users: Vec::new(),
            devices: Vec::new(),
            contacts: Vec::new(),
        }
    }

    fn new_id(&mut self) -> uuid::Uuid {
        uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.gen_range(0..items.len())]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.rng.gen_range(0..10u8))).collect()
    }

    /// A landline number for an office, in one of the many ways people write them.
    fn landline(&mut self, office: &Office) -> String {
        let len = self.rng.gen_range(6..=8);
        let n = self.digits(len);
        let (cc, area) = (office.cc, office.area);
        if cc == "1" {
            let tail = self.digits(3);
            return match self.rng.gen_range(0..3) {
                0 => format!("+1 {area} 555 0{tail}"),
                1 => format!("+1 ({area}) 555-0{tail}"),
                _ => format!("(425) 555-0{tail}"),
            };
        }
        match self.rng.gen_range(0..100) {
            0..=24 => format!("+{cc} {area} {n}"),
            25..=44 => format!("0{area} {n}"),
            45..=54 => format!("00{cc}{area} {n}"),
            55..=64 => format!("+{cc} (0){area} {}-{}", &n[..3], &n[3..]),
            65..=72 => format!("(0{area}) {} {} {}", &n[..3], &n[3..5], &n[5..]),
            73..=82 => format!("+{cc}{area}{n}"),
            83..=90 => format!("+{cc} {area} {n}-{}", self.digits(3)),
            91..=94 => format!("+1 425 555 0{}", self.digits(3)),
            95..=96 => format!("+44 20 7946 0{}", self.digits(3)),
            97 => "ask reception".to_string(),
            98 => "n/a".to_string(),
            _ => format!("intern {}", self.digits(4)),
        }
    }

    fn mobile(&mut self) -> String {
        let prefix = self.pick(&["151", "160", "170", "171", "172", "176", "1520"]);
        let n = self.digits(if prefix.len() == 4 { 7 } else { 8 });
        match self.rng.gen_range(0..5) {
            0 => format!("+49 {prefix} {n}"),
            1 => format!("0{prefix} {n}"),
            2 => format!("0049 {prefix} {n}"),
            3 => format!("+49 (0){prefix} {n}"),
            _ => format!("+49{prefix}{n}"),
        }
    }

    fn run(mut self) -> Tenant {
        for i in 0..self.opts.users {
            self.user(i);
        }
        self.managers();
        for _ in 0..self.opts.devices {
            self.device();
        }
        for _ in 0..self.opts.contacts {
            self.contact();
        }
        self.groups();
        self.tenant
    }

    fn unique_upn(&mut self, local: &str, domain: &str) -> String {
        let key = format!("{local}@{domain}").to_lowercase();
        let mut n = self.upn_next.get(&key).copied().unwrap_or(1);
        loop {
            let candidate = if n == 1 {
                format!("{local}@{domain}")
            } else {
                format!("{local}{n}@{domain}")
            };
            if self.upns.insert(candidate.to_lowercase()) {
                self.upn_next.insert(key, n + 1);
                return candidate;
            }
            n += 1;
        }
    }

    fn user(&mut self, index: usize) {
        let uuid = self.new_id();
        let id = uuid.to_string();
        let domain = self.opts.domain.clone();
        let roll = self.rng.gen_range(0..100);
        let function_account = index > 0 && roll < 3;
        let guest = index > 0 && (3..9).contains(&roll);
        let office = &OFFICES[if self.rng.gen_bool(0.7) {
            self.rng.gen_range(0..2)
        } else {
            self.rng.gen_range(0..OFFICES.len())
        }];
        let (given, surname) = (names::given(&mut self.rng), names::surname(&mut self.rng));
        let surname = surname.as_str();
        let department = self.pick(DEPARTMENTS);

        let (display, given_v, surname_v, local) = if function_account {
            let name = self.pick(FUNCTION_ACCOUNTS);
            let local = ascii_fold(name).to_lowercase();
            let local = if local.is_empty() {
                "postfach".to_string()
            } else {
                local
            };
            (name.to_string(), Value::Null, Value::Null, local)
        } else {
            let display = match self.rng.gen_range(0..100) {
                0..=86 => format!("{given} {surname}"),
                87..=94 => format!("{surname}, {given}"),
                95..=97 => format!("{given} {surname} (Extern)"),
                _ => format!("{given} {surname} + Assistenz"),
            };
            (display, json!(given), json!(surname), local_part(given, surname))
        };

        let (upn, mail, nickname, user_type, company) = if guest {
            let ext = self.pick(PARTNER_DOMAINS);
            let mail = format!("{local}@{ext}");
            let ext_local = format!("{local}_{ext}#EXT#");
            let upn = self.unique_upn(&ext_local, &self.initial_domain.clone());
            (
                upn,
                json!(mail),
                ext_local,
                "Guest",
                json!(self.pick(PARTNER_COMPANIES)),
            )
        } else {
            let upn = self.unique_upn(&local, &domain);
            let mail = if self.rng.gen_bool(0.95) {
                json!(upn)
            } else {
                Value::Null
            };
            let nick = upn.split('@').next().unwrap_or_default().to_string();
            (upn, mail, nick, "Member", json!("Contoso GmbH"))
        };
        let member = user_type == "Member";
        let enabled = !self.rng.gen_bool(0.06);

        let phones: Vec<String> = if guest {
            Vec::new()
        } else {
            let count = match self.rng.gen_range(0..100) {
                0..=14 => 0,
                15..=79 => 1,
                80..=94 => 2,
                _ => 3,
            };
            (0..count).map(|_| self.landline(office)).collect()
        };
        let mobile = if self.rng.gen_bool(0.6) {
            json!(self.mobile())
        } else {
            Value::Null
        };
        let fax = if member && self.rng.gen_bool(0.2) {
            json!(format!("+{} {} {}-99", office.cc, office.area, self.digits(6)))
        } else {
            Value::Null
        };
        let hybrid = member && !function_account && self.rng.gen_bool(0.35);
        let sam = if hybrid {
            let s: String = format!(
                "{}{}",
                ascii_fold(given).chars().next().unwrap_or('x'),
                ascii_fold(surname)
            )
            .to_lowercase()
            .chars()
            .take(20)
            .collect();
            json!(s)
        } else {
            Value::Null
        };
        let mut ext = Map::new();
        for n in 1..=15 {
            ext.insert(format!("extensionAttribute{n}"), Value::Null);
        }
        if member && self.rng.gen_bool(0.5) {
            ext.insert("extensionAttribute1".into(), json!(format!("CC-{}", self.digits(4))));
        }
        if member && self.rng.gen_bool(0.2) {
            ext.insert(
                "extensionAttribute10".into(),
                json!(format!("Durchwahl {}", self.digits(3))),
            );
        }
        let label = self.initial_domain.clone();
        let proxies: Vec<String> = match (&mail, guest) {
            (Value::String(m), false) => vec![format!("SMTP:{m}"), format!("smtp:{nickname}@{label}")],
            _ => Vec::new(),
        };
        let office_location = match self.rng.gen_range(0..3) {
            0 => json!(office.name),
            1 => json!(format!(
                "{}, {}. OG, Raum {}",
                office.city,
                self.rng.gen_range(0..6),
                self.digits(3)
            )),
            _ => Value::Null,
        };
        let on_prem_dn = if hybrid {
            json!(format!(
                "CN={},OU=Users,OU={},DC=contoso,DC=local",
                display.replace(',', "\\,"),
                ascii_fold(office.city)
            ))
        } else {
            Value::Null
        };
        let props = obj(json!({
            "id": id,
            "accountEnabled": enabled,
            "businessPhones": phones,
            "city": if guest { Value::Null } else { json!(office.city) },
            "companyName": company,
            "country": if guest { Value::Null } else { json!(office.country) },
            "createdDateTime": past(&mut self.rng),
            "department": if guest || function_account { Value::Null } else { json!(department) },
            "displayName": display,
            "employeeId": if member && !function_account && self.rng.gen_bool(0.8) {
                json!(format!("E{}", self.digits(5)))
            } else {
                Value::Null
            },
            "faxNumber": fax,
            "givenName": given_v,
            "jobTitle": if guest || function_account { Value::Null } else { json!(self.pick(TITLES)) },
            "mail": mail,
            "mailNickname": nickname,
            "mobilePhone": mobile,
            "officeLocation": office_location,
            "onPremisesDistinguishedName": on_prem_dn,
            "onPremisesDomainName": if hybrid { json!("contoso.local") } else { Value::Null },
            "onPremisesExtensionAttributes": ext,
            "onPremisesImmutableId": if hybrid {
                json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, uuid.as_bytes()))
            } else {
                Value::Null
            },
            "onPremisesSamAccountName": sam,
            "onPremisesSyncEnabled": if hybrid { json!(true) } else { Value::Null },
            "onPremisesUserPrincipalName": if hybrid { json!(upn.replace(&domain, "contoso.local")) } else { Value::Null },
            "postalCode": if guest { Value::Null } else { json!(office.postal) },
            "preferredLanguage": if self.rng.gen_bool(0.7) { json!("de-DE") } else { json!("en-US") },
            "proxyAddresses": proxies,
            "securityIdentifier": sid_for(&uuid),
            "state": if guest { Value::Null } else { json!(office.state) },
            "streetAddress": if guest { Value::Null } else { json!(office.street) },
            "surname": surname_v,
            "usageLocation": office.usage,
            "userPrincipalName": upn,
            "userType": user_type,
        }));
        if self.tenant.add(GraphKind::User, props).is_ok() {
            if self.rng.gen_bool(self.opts.photo_ratio.clamp(0.0, 1.0)) {
                let _ = self
                    .tenant
                    .set_photo(&id, Some(jpeg::photo(self.opts.seed ^ (index as u64) << 20)));
            }
            self.users.push(UserInfo {
                id,
                given: given.to_string(),
                member: member && !function_account,
                enabled,
                department,
            });
        }
    }

    /// An org chart: the first user leads, about one in twelve people manage others.
    fn managers(&mut self) {
        let people: Vec<usize> = (0..self.users.len()).filter(|i| self.users[*i].member).collect();
        let Some((&top, rest)) = people.split_first() else {
            return;
        };
        let leads: Vec<usize> = rest.iter().copied().step_by(12).collect();
        for &l in &leads {
            let (user, boss) = (self.users[l].id.clone(), self.users[top].id.clone());
            let _ = self.tenant.set_manager(&user, Some(&boss));
        }
        let is_lead: HashSet<usize> = leads.iter().copied().collect();
        for &p in rest {
            if is_lead.contains(&p) || self.rng.gen_bool(0.1) {
                continue;
            }
            let Some(&lead) = leads.choose(&mut self.rng) else {
                continue;
            };
            let (user, boss) = (self.users[p].id.clone(), self.users[lead].id.clone());
            let _ = self.tenant.set_manager(&user, Some(&boss));
        }
    }

    fn device(&mut self) {
        let uuid = self.new_id();
        let id = uuid.to_string();
        let device_id = self.new_id().to_string();
        let owner = if self.users.is_empty() {
            "Kiosk".to_string()
        } else {
            let i = self.rng.gen_range(0..self.users.len());
            self.users[i].given.clone()
        };
        let tag: String = (0..7)
            .map(|_| {
                let c = self.rng.gen_range(0..36u8);
                char::from(if c < 10 { b'0' + c } else { b'A' + c - 10 })
            })
            .collect();
        let (name, os, version, trust) = match self.rng.gen_range(0..100) {
            0..=34 => (format!("DESKTOP-{tag}"), "Windows", "10.0.22631.3447", "AzureAd"),
            35..=49 => (format!("LAPTOP-{tag}"), "Windows", "10.0.19045.4291", "ServerAd"),
            50..=64 => (format!("iPhone von {owner}"), "iOS", "17.4.1", "Workplace"),
            65..=72 => (format!("{owner}s iPad"), "iPadOS", "17.4", "Workplace"),
            73..=82 => (format!("Galaxy S23 ({owner})"), "Android", "14.0", "Workplace"),
            83..=92 => (format!("{owner}'s MacBook Pro"), "MacMDM", "14.4.1", "AzureAd"),
            93..=96 => (
                format!("NB-BER-{}", self.digits(4)),
                "Windows",
                "10.0.22621.2861",
                "ServerAd",
            ),
            _ => (
                format!("srv-print-{}", self.digits(2)),
                "Linux",
                "Ubuntu 22.04",
                "AzureAd",
            ),
        };
        let props = obj(json!({
            "id": id,
            "accountEnabled": !self.rng.gen_bool(0.05),
            "approximateLastSignInDateTime": past(&mut self.rng),
            "deviceId": device_id,
            "deviceOwnership": if trust == "Workplace" { "Personal" } else { "Company" },
            "displayName": name,
            "isCompliant": self.rng.gen_bool(0.8),
            "isManaged": self.rng.gen_bool(0.85),
            "manufacturer": match os { "iOS" | "iPadOS" | "MacMDM" => "Apple", "Android" => "Samsung", _ => "Dell Inc." },
            "operatingSystem": os,
            "operatingSystemVersion": version,
            "profileType": "RegisteredDevice",
            "registrationDateTime": past(&mut self.rng),
            "trustType": trust,
        }));
        if self.tenant.add(GraphKind::Device, props).is_ok() {
            self.devices.push(id);
        }
    }

    fn contact(&mut self) {
        let id = self.new_id().to_string();
        let (given, surname) = (names::given(&mut self.rng), names::surname(&mut self.rng));
        let surname = surname.as_str();
        let company = self.pick(PARTNER_COMPANIES);
        let domain = self.pick(PARTNER_DOMAINS);
        let local = local_part(given, surname);
        let display = if self.rng.gen_bool(0.3) {
            format!("{surname}, {given} ({company})")
        } else {
            format!("{given} {surname}")
        };
        let office = &OFFICES[self.rng.gen_range(0..OFFICES.len())];
        let business = self.landline(office);
        let mobile = if self.rng.gen_bool(0.5) {
            json!(self.mobile())
        } else {
            Value::Null
        };
        let fax = if self.rng.gen_bool(0.2) {
            json!(format!("+{} {} {}-9", office.cc, office.area, self.digits(6)))
        } else {
            Value::Null
        };
        let props = obj(json!({
            "id": id,
            "addresses": [{
                "city": office.city,
                "countryOrRegion": office.country,
                "officeLocation": Value::Null,
                "postalCode": office.postal,
                "state": office.state,
                "street": office.street,
            }],
            "companyName": company,
            "department": self.pick(DEPARTMENTS),
            "displayName": display,
            "givenName": given,
            "jobTitle": self.pick(TITLES),
            "mail": format!("{local}@{domain}"),
            "mailNickname": format!("{}{}", local.replace('.', ""), self.digits(2)),
            "onPremisesSyncEnabled": Value::Null,
            "phones": [
                {"type": "business", "number": business},
                {"type": "mobile", "number": mobile},
                {"type": "businessFax", "number": fax},
            ],
            "proxyAddresses": [format!("SMTP:{local}@{domain}")],
            "surname": surname,
        }));
        if self.tenant.add(GraphKind::Contact, props).is_ok() {
            self.contacts.push(id);
        }
    }

    fn group_props(&mut self, name: &str, index: usize) -> (String, Map<String, Value>) {
        let uuid = self.new_id();
        let id = uuid.to_string();
        let nick = {
            let n = ascii_fold(name).to_lowercase();
            if n.is_empty() {
                format!("group{index}")
            } else {
                n
            }
        };
        // security, Microsoft 365, mail-enabled security, distribution list.
        let (types, mail_enabled, security) = match index % 4 {
            0 => (json!([]), false, true),
            1 => (json!(["Unified"]), true, false),
            2 => (json!([]), true, true),
            _ => (json!([]), true, false),
        };
        let mail = if mail_enabled {
            json!(format!("{nick}@{}", self.opts.domain))
        } else {
            Value::Null
        };
        let hybrid = index % 5 == 2;
        let props = obj(json!({
            "id": id,
            "classification": Value::Null,
            "createdDateTime": past(&mut self.rng),
            "description": format!("{name} ({})", if security { "Sicherheitsgruppe" } else { "Verteiler" }),
            "displayName": name,
            "groupTypes": types,
            "mail": mail,
            "mailEnabled": mail_enabled,
            "mailNickname": nick,
            "onPremisesSamAccountName": if hybrid { json!(nick.chars().take(20).collect::<String>()) } else { Value::Null },
            "onPremisesSyncEnabled": if hybrid { json!(true) } else { Value::Null },
            "proxyAddresses": match &mail { Value::String(m) => json!([format!("SMTP:{m}")]), _ => json!([]) },
            "securityEnabled": security,
            "securityIdentifier": sid_for(&uuid),
            "visibility": if index % 4 == 1 { json!("Private") } else { Value::Null },
        }));
        (id, props)
    }

    fn groups(&mut self) {
        let g = self.opts.groups;
        let mut names: Vec<String> = Vec::new();
        if g > 0 {
            names.push("Alle Mitarbeitenden".into());
        }
        for d in DEPARTMENTS {
            if names.len() >= g.min(1 + DEPARTMENTS.len()) {
                break;
            }
            names.push(format!("Abteilung {d}"));
        }
        let mut round = 1;
        while names.len() < g {
            for n in GROUP_NAMES {
                if names.len() >= g {
                    break;
                }
                names.push(if round == 1 {
                    (*n).to_string()
                } else {
                    format!("{n} {round}")
                });
            }
            round += 1;
        }
        let mut ids = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (id, props) = self.group_props(name, i);
            if self.tenant.add(GraphKind::Group, props).is_ok() {
                ids.push(id);
            }
        }
        let add = |t: &mut Tenant, group: &str, id: &str, ty: &str| {
            let _ = t.add_member(
                group,
                MemberRef {
                    id: id.to_string(),
                    odata_type: ty.to_string(),
                },
            );
        };
        for (i, gid) in ids.iter().enumerate() {
            if i == 0 {
                // Everybody: the large group that arrives in member slices.
                for u in self.users.iter().filter(|u| u.member && u.enabled) {
                    add(&mut self.tenant, gid, &u.id, "user");
                }
            } else if i <= DEPARTMENTS.len() && names[i].starts_with("Abteilung ") {
                let dept = &names[i]["Abteilung ".len()..];
                for u in self.users.iter().filter(|u| u.member && u.department == dept) {
                    add(&mut self.tenant, gid, &u.id, "user");
                }
            } else {
                let n = self.rng.gen_range(3..=40).min(self.users.len());
                let chosen: Vec<String> = self
                    .users
                    .choose_multiple(&mut self.rng, n)
                    .map(|u| u.id.clone())
                    .collect();
                for u in chosen {
                    add(&mut self.tenant, gid, &u, "user");
                }
                if i % 3 == 0 && !self.devices.is_empty() {
                    let d: Vec<String> = self.devices.choose_multiple(&mut self.rng, 5).cloned().collect();
                    for dev in d {
                        add(&mut self.tenant, gid, &dev, "device");
                    }
                }
                if i % 4 == 1 && !self.contacts.is_empty() {
                    let c: Vec<String> = self.contacts.choose_multiple(&mut self.rng, 3).cloned().collect();
                    for contact in c {
                        add(&mut self.tenant, gid, &contact, "orgContact");
                    }
                }
                if i % 7 == 3 {
                    let sp = self.new_id().to_string();
                    add(&mut self.tenant, gid, &sp, "servicePrincipal");
                }
            }
            // Nesting only points to later groups, so there are no cycles.
            if i > 0 && i + 1 < ids.len() && self.rng.gen_bool(0.3) {
                let j = self.rng.gen_range(i + 1..ids.len());
                add(&mut self.tenant, gid, &ids[j], "group");
            }
        }
        // Department groups nest into "everybody" (a group in a group in a group).
        if ids.len() > 2 {
            add(&mut self.tenant, &ids[0].clone(), &ids[1].clone(), "group");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (UTC), as Graph writes timestamps.
pub fn iso8601(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> GenOptions {
        GenOptions {
            users: 500,
            groups: 40,
            devices: 150,
            contacts: 20,
            seed,
            photo_ratio: 0.3,
            domain: "contoso.example".into(),
        }
    }

    fn users(t: &Tenant) -> Vec<&Map<String, Value>> {
        t.objects(GraphKind::User).values().map(|o| &o.props).collect()
    }

    fn s<'a>(p: &'a Map<String, Value>, k: &str) -> &'a str {
        p.get(k).and_then(Value::as_str).unwrap_or_default()
    }

    #[test]
    fn same_seed_same_tenant_other_seed_other_tenant() {
        let dump = |t: &Tenant| -> Vec<String> {
            GraphKind::ALL
                .into_iter()
                .flat_map(|k| {
                    t.objects(k)
                        .values()
                        .map(|o| Value::Object(o.props.clone()).to_string())
                })
                .collect()
        };
        let (a, b, c) = (generate(&opts(1)), generate(&opts(1)), generate(&opts(2)));
        assert_eq!(dump(&a), dump(&b));
        assert_ne!(dump(&a), dump(&c));
        let photos = |t: &Tenant| -> Vec<String> {
            t.objects(GraphKind::User)
                .values()
                .filter_map(|o| o.photo.as_ref().map(|p| p.etag.clone()))
                .collect()
        };
        assert_eq!(photos(&a), photos(&b));
    }

    #[test]
    fn counts_match_the_options() {
        let t = generate(&opts(3));
        assert_eq!(t.live_ids(GraphKind::User).len(), 500);
        assert_eq!(t.live_ids(GraphKind::Group).len(), 40);
        assert_eq!(t.live_ids(GraphKind::Device).len(), 150);
        assert_eq!(t.live_ids(GraphKind::Contact).len(), 20);
        let with_photo = t
            .objects(GraphKind::User)
            .values()
            .filter(|o| o.photo.is_some())
            .count();
        assert!((100..200).contains(&with_photo), "{with_photo} photos for ratio 0.3");
        let empty = generate(&GenOptions {
            users: 0,
            groups: 0,
            devices: 0,
            contacts: 0,
            ..opts(1)
        });
        assert!(GraphKind::ALL.iter().all(|k| empty.objects(*k).is_empty()));
        let tiny = generate(&GenOptions {
            users: 1,
            groups: 3,
            devices: 0,
            contacts: 0,
            ..opts(1)
        });
        assert_eq!(tiny.live_ids(GraphKind::Group).len(), 3);
    }

    #[test]
    fn users_are_varied_like_a_real_tenant() {
        let t = generate(&opts(4));
        let us = users(&t);
        let upns: HashSet<&str> = us.iter().map(|u| s(u, "userPrincipalName")).collect();
        assert_eq!(upns.len(), us.len(), "UPNs are unique");
        assert!(upns.iter().all(|u| u.is_ascii() && u.contains('@')));
        assert!(us.iter().any(|u| !s(u, "displayName").is_ascii()), "non-ASCII names");
        assert!(
            us.iter().any(|u| s(u, "displayName").contains(',')),
            "names with commas"
        );
        assert!(us.iter().any(|u| s(u, "displayName").contains('+')), "names with '+'");
        let guests: Vec<_> = us.iter().filter(|u| s(u, "userType") == "Guest").collect();
        assert!(!guests.is_empty() && guests.iter().all(|g| s(g, "userPrincipalName").contains("#EXT#@")));
        assert!(us.iter().any(|u| u["accountEnabled"] == false));
        assert!(us.iter().any(|u| !s(u, "onPremisesSamAccountName").is_empty()));
        assert!(us.iter().all(|u| s(u, "securityIdentifier").starts_with("S-1-12-1-")));
        let phones: Vec<&str> = us
            .iter()
            .flat_map(|u| {
                u["businessPhones"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
            })
            .collect();
        assert!(phones.iter().any(|p| p.starts_with("+49 ")));
        assert!(phones.iter().any(|p| p.starts_with("0") && !p.starts_with("00")));
        assert!(phones.iter().any(|p| p.starts_with("0049")));
        assert!(phones.iter().any(|p| p.starts_with("+1 ")));
        assert!(
            phones.iter().any(|p| !p.chars().any(|c| c.is_ascii_digit())),
            "some garbage"
        );
        let counts: HashSet<usize> = us
            .iter()
            .map(|u| u["businessPhones"].as_array().map_or(0, Vec::len))
            .collect();
        assert!(counts.contains(&0) && counts.contains(&1) && counts.contains(&2));
        let managed = t
            .objects(GraphKind::User)
            .values()
            .filter(|o| o.manager.is_some())
            .count();
        assert!(managed > us.len() / 2);
    }

    #[test]
    fn groups_nest_and_hold_every_member_type() {
        let t = generate(&opts(5));
        let types: HashSet<String> = t
            .objects(GraphKind::Group)
            .values()
            .flat_map(|g| g.live_members().map(|(_, m)| m.odata_type.clone()))
            .collect();
        for ty in ["user", "group", "device", "orgContact", "servicePrincipal"] {
            assert!(types.contains(ty), "no {ty} members");
        }
        let largest = t
            .objects(GraphKind::Group)
            .values()
            .map(|g| g.live_members().count())
            .max();
        assert!(largest.unwrap_or(0) > 300, "a large group for member slices");
        let kinds: HashSet<String> = t
            .objects(GraphKind::Group)
            .values()
            .map(|g| g.props["groupTypes"].to_string())
            .collect();
        assert!(kinds.contains("[\"Unified\"]") && kinds.contains("[]"));
        let devices: Vec<_> = t.objects(GraphKind::Device).values().map(|d| &d.props).collect();
        assert!(devices
            .iter()
            .all(|d| !s(d, "deviceId").is_empty() && !s(d, "operatingSystem").is_empty()));
        let contact = t
            .objects(GraphKind::Contact)
            .values()
            .next()
            .map(|c| c.props.clone())
            .unwrap_or_default();
        assert_eq!(contact["phones"][0]["type"], "business");
    }

    #[test]
    fn generated_photos_are_jpegs() {
        let t = generate(&opts(6));
        let p = t.objects(GraphKind::User).values().find_map(|o| o.photo.clone());
        assert!(p.is_some_and(|p| p.jpeg.starts_with(&[0xFF, 0xD8]) && p.etag.starts_with("W/\"")));
    }

    #[test]
    fn iso8601_formats_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn ascii_fold_transliterates() {
        assert_eq!(ascii_fold("Müller"), "Mueller");
        assert_eq!(ascii_fold("Łukasz Ørsted"), "LukaszOrsted");
        assert_eq!(ascii_fold("O'Brien"), "OBrien");
    }
}
