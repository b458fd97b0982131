//! People's names as a real company has them: a few hundred surnames and given names with a heavily skewed
//! frequency, and a long tail of rare ones.
//!
//! Phone-book searches are only as hard as the names behind them. In a German company Müller and Schmidt alone
//! are a few percent of the staff, and a person at a desk phone types three or four letters ("Sch", "Mül"), so
//! every search matches hundreds or thousands of entries. Names drawn uniformly from a short list, or made
//! unique with a counter, would make every index look better than it is. The lists mix German, Turkish, Polish,
//! English, Southern and Eastern European, Nordic and Vietnamese names with their own letters; the weights
//! follow a Zipf-like rank distribution (the shape surname statistics have), and about a fifth of the people get
//! a rarely shared surname built from common name parts.

use rand::rngs::SmallRng;
use rand::Rng;
use std::sync::OnceLock;

/// Surnames roughly by frequency in a German company with international staff (most common first).
const SURNAMES: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Schäfer",
    "Koch",
    "Bauer",
    "Richter",
    "Klein",
    "Yılmaz",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Schmitz",
    "Krause",
    "Meier",
    "Kaya",
    "Lehmann",
    "Schmid",
    "Schulze",
    "Maier",
    "Köhler",
    "Herrmann",
    "König",
    "Nowak",
    "Walter",
    "Mayer",
    "Huber",
    "Kaiser",
    "Fuchs",
    "Peters",
    "Demir",
    "Lang",
    "Scholz",
    "Möller",
    "Weiß",
    "Jung",
    "Hahn",
    "Schubert",
    "Vogel",
    "Friedrich",
    "Keller",
    "Günther",
    "Frank",
    "Berger",
    "Şahin",
    "Winkler",
    "Roth",
    "Beck",
    "Lorenz",
    "Baumann",
    "Franke",
    "Albrecht",
    "Schuster",
    "Simon",
    "Ludwig",
    "Böhm",
    "Winter",
    "Kraus",
    "Martin",
    "Çelik",
    "Schumacher",
    "Krämer",
    "Vogt",
    "Stein",
    "Jäger",
    "Otto",
    "Sommer",
    "Groß",
    "Seidel",
    "Heinrich",
    "Kowalski",
    "Brandt",
    "Haas",
    "Schreiber",
    "Graf",
    "Schulte",
    "Dietrich",
    "Ziegler",
    "Kuhn",
    "Kühn",
    "Pohl",
    "Engel",
    "Horn",
    "Busch",
    "Bergmann",
    "Thomas",
    "Voigt",
    "Sauer",
    "Arnold",
    "Wolff",
    "Pfeiffer",
    "Öztürk",
    "Smith",
    "Yıldız",
    "Wiśniewski",
    "Rossi",
    "García",
    "Lindner",
    "Ernst",
    "Hübner",
    "Kramer",
    "Franz",
    "Beyer",
    "Wolter",
    "Peter",
    "Jansen",
    "Kern",
    "Hofmeister",
    "Brinkmann",
    "Lenz",
    "Haase",
    "Schilling",
    "Förster",
    "Nagel",
    "Petersen",
    "Hesse",
    "Aydın",
    "Özdemir",
    "Wójcik",
    "Kowalczyk",
    "Jones",
    "Williams",
    "Nguyễn",
    "Ivanović",
    "Horváth",
    "Novák",
    "Dvořák",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Fernández",
    "González",
    "Rodríguez",
    "López",
    "Martínez",
    "Sánchez",
    "Pérez",
    "Dubois",
    "Bernard",
    "Lefèvre",
    "Durand",
    "Petit",
    "de Jong",
    "de Vries",
    "van den Berg",
    "van Dijk",
    "Bakker",
    "Hansen",
    "Nielsen",
    "Jensen",
    "Andersen",
    "Pedersen",
    "Ørsted",
    "Lindqvist",
    "Håkansson",
    "Johansson",
    "Arslan",
    "Doğan",
    "Kılıç",
    "Aslan",
    "Çetin",
    "Kara",
    "Koç",
    "Kurt",
    "Özkan",
    "Şimşek",
    "Kamiński",
    "Lewandowski",
    "Zieliński",
    "Szymański",
    "Woźniak",
    "Dąbrowski",
    "Kozłowski",
    "Jankowski",
    "Mazur",
    "Kwiatkowski",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "O'Brien",
    "Murphy",
    "Kelly",
    "Svoboda",
    "Novotný",
    "Nagy",
    "Kovács",
    "Tóth",
    "Szabó",
    "Jovanović",
    "Petrović",
    "Đorđević",
    "Nikolić",
    "Marković",
    "Papadopoulos",
    "Georgiou",
    "Ivanov",
    "Smirnov",
    "Kuznetsov",
    "Popov",
    "Trần",
    "Lê",
    "Phạm",
    "Romano",
    "Colombo",
    "Ricci",
    "Marino",
    "Greco",
    "Moreau",
    "Laurent",
    "Lefebvre",
    "Mercier",
    "Schwab",
    "Brauer",
    "Seifert",
    "Sturm",
    "Ebert",
    "Reuter",
    "Ott",
    "Ritter",
    "Kolb",
    "Fritz",
    "Marx",
    "Thiel",
    "Böttcher",
    "Kuhlmann",
    "Stahl",
    "Noack",
    "Gerlach",
    "Bischoff",
    "Buchholz",
    "Rieger",
    "Meyer-Lüdenscheidt",
    "Müller-Thurgau",
    "Schmidt-Köhler",
    "Weber-Öztürk",
];

/// Given names, most common first.
const GIVEN: &[&str] = &[
    "Thomas",
    "Michael",
    "Andreas",
    "Stefan",
    "Anna",
    "Sabine",
    "Julia",
    "Christian",
    "Markus",
    "Katharina",
    "Daniel",
    "Laura",
    "Alexander",
    "Maria",
    "Peter",
    "Sandra",
    "Jan",
    "Lukas",
    "Lisa",
    "Tobias",
    "Jürgen",
    "Sarah",
    "Martin",
    "Claudia",
    "Frank",
    "Nicole",
    "Sebastian",
    "Susanne",
    "Matthias",
    "Petra",
    "Felix",
    "Anja",
    "Jonas",
    "Melanie",
    "Florian",
    "Lea",
    "Mehmet",
    "Ayşe",
    "Fatma",
    "Ahmet",
    "Emre",
    "Elif",
    "Zeynep",
    "Aylin",
    "Łukasz",
    "Agnieszka",
    "Piotr",
    "Katarzyna",
    "Małgorzata",
    "Paweł",
    "John",
    "David",
    "James",
    "Emma",
    "Olivia",
    "Sophie",
    "José",
    "María",
    "Lucía",
    "Élodie",
    "Chloé",
    "François",
    "Zoë",
    "Søren",
    "Björn",
    "Åsa",
    "Jörg",
    "Günter",
    "Hans-Peter",
    "Karl-Heinz",
    "Anne-Marie",
    "Marie-Luise",
    "Uwe",
    "Dieter",
    "Monika",
    "Renate",
    "Ursula",
    "Helga",
    "Niklas",
    "Leon",
    "Ben",
    "Paul",
    "Mia",
    "Hannah",
    "Emilia",
    "Greta",
    "Ida",
    "Milica",
    "Nikola",
    "Dragan",
    "Jelena",
    "Giulia",
    "Marco",
    "Luca",
    "Francesca",
    "Ivan",
    "Olga",
    "Dmitri",
    "Minh",
    "Linh",
    "Thảo",
    "Kenji",
    "Yuki",
    "Priya",
    "Arjun",
    "Ömer",
    "Gökhan",
    "Şule",
];

/// Parts for surnames few people share.
const RARE_FRONT: &[&str] = &[
    "Brand", "Kess", "Wald", "Berg", "Stein", "Eich", "Rosen", "Linden", "Feld", "Hag", "Mühl", "Ober", "Unter",
    "Grün", "Schwarz", "Weiß", "Kirch", "Bach", "Holz", "Thal", "Dorn", "Falk", "Hirsch", "Strauß", "Löw", "Fried",
    "Gott", "Sieg", "Wolf", "Kön", "Bäh", "Jüt", "Öst", "Kraw", "Sobo", "Dobr", "Wierz", "Grabo",
];
const RARE_BACK: &[&str] = &[
    "huber",
    "ler",
    "mann",
    "meier",
    "hofer",
    "bauer",
    "inger",
    "eder",
    "bichler",
    "ner",
    "berger",
    "gruber",
    "hammer",
    "wieser",
    "schläger",
    "müller",
    "macher",
    "ski",
    "czyk",
    "owicz",
    "ak",
    "oğlu",
    "ström",
    "sen",
];

/// Cumulative Zipf-like weights for a list: rank *r* gets `1 / (r + offset)`.
fn cumulative(len: usize, offset: f64) -> Vec<f64> {
    let mut acc = 0.0;
    (0..len)
        .map(|r| {
            acc += 1.0 / (r as f64 + offset);
            acc
        })
        .collect()
}

fn weighted<'a>(rng: &mut SmallRng, items: &[&'a str], cum: &[f64]) -> &'a str {
    let total = cum.last().copied().unwrap_or(1.0);
    let x = rng.gen_range(0.0..total);
    let i = cum.partition_point(|c| *c <= x).min(items.len() - 1);
    items[i]
}

/// Share of people whose surname is a rare composite rather than one of [`SURNAMES`].
const RARE_SHARE: f64 = 0.2;

/// A surname as drawn from a real company's staff.
pub fn surname(rng: &mut SmallRng) -> String {
    static CUM: OnceLock<Vec<f64>> = OnceLock::new();
    if rng.gen_bool(RARE_SHARE) {
        let front = RARE_FRONT[rng.gen_range(0..RARE_FRONT.len())];
        let back = RARE_BACK[rng.gen_range(0..RARE_BACK.len())];
        return format!("{front}{back}");
    }
    let cum = CUM.get_or_init(|| cumulative(SURNAMES.len(), 6.0));
    weighted(rng, SURNAMES, cum).to_string()
}

/// A given name, with the same kind of skew.
pub fn given(rng: &mut SmallRng) -> &'static str {
    static CUM: OnceLock<Vec<f64>> = OnceLock::new();
    let cum = CUM.get_or_init(|| cumulative(GIVEN.len(), 4.0));
    weighted(rng, GIVEN, cum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashMap;

    /// The shape the benchmarks rely on: skewed like real staff lists, with a long tail and non-ASCII letters.
    #[test]
    fn surnames_are_skewed_like_a_real_company() {
        let mut rng = SmallRng::seed_from_u64(1);
        let n = 20_000;
        let mut count: HashMap<String, usize> = HashMap::new();
        for _ in 0..n {
            *count.entry(surname(&mut rng)).or_default() += 1;
        }
        let share = |s: &str| count.get(s).copied().unwrap_or(0) as f64 / n as f64;
        assert!((0.015..0.06).contains(&share("Müller")), "Müller {}", share("Müller"));
        assert!(share("Müller") > share("Hoffmann") && share("Hoffmann") > share("Kovács"));
        let sch = count
            .iter()
            .filter(|(s, _)| s.starts_with("Sch"))
            .map(|(_, c)| c)
            .sum::<usize>();
        assert!(
            sch as f64 / n as f64 > 0.08,
            "'Sch' is what half of Germany's phone searches start with"
        );
        assert!(count.len() > 400, "a long tail: {} distinct surnames", count.len());
        assert!(count.keys().filter(|s| !s.is_ascii()).count() > 50);
        let mut rng = SmallRng::seed_from_u64(1);
        let firsts: Vec<&str> = (0..1000).map(|_| given(&mut rng)).collect();
        let thomas = firsts.iter().filter(|g| **g == "Thomas").count();
        assert!((20..150).contains(&thomas), "Thomas {thomas} in 1000");
    }
}
