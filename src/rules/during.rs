//! `during:` time windows: weekdays, hours, dates, in an IANA time zone.
//!
//! ```yaml
//! during:
//!   days: mon-fri                 # or [mon, wed, fri]; ranges wrap (fri-mon)
//!   hours: "08:00-18:00"          # or a list; end exclusive; "22:00-06:00" spans midnight
//!   dates: ["2026-12-24", "2026-12-27..2026-12-31"]   # only these days
//!   except_dates: ["2026-12-25"]  # never these days
//!   tz: Europe/Berlin             # default: this machine's zone
//! ```
//! The event's own time (`at`) is what is checked, so replays and `callhook test` judge
//! as the live daemon did.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::event::Event;

/// `during:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuringConfig {
    #[serde(default)]
    pub days: Option<OneOrMany>,
    #[serde(default)]
    pub hours: Option<OneOrMany>,
    #[serde(default)]
    pub dates: Option<Vec<String>>,
    #[serde(default)]
    pub except_dates: Option<Vec<String>>,
    #[serde(default)]
    pub tz: Option<String>,
}

/// A single string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(one) => vec![one.as_str()],
            OneOrMany::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

/// A checked time window.
#[derive(Debug, Clone)]
pub struct During {
    /// Allowed weekdays, Monday first; all when `days` was not given.
    days: [bool; 7],
    hours: Vec<(Time, Time)>,
    dates: Vec<(Date, Date)>,
    except: Vec<(Date, Date)>,
    tz: TimeZone,
    text: String,
}

impl During {
    pub fn build(config: &DuringConfig) -> Result<During, String> {
        let mut days = [config.days.is_none(); 7];
        if let Some(list) = &config.days {
            for item in list.items() {
                let (from, to) = match item.split_once('-') {
                    Some((a, b)) => (weekday(a)?, weekday(b)?),
                    None => (weekday(item)?, weekday(item)?),
                };
                let mut day = from;
                loop {
                    days[day] = true;
                    if day == to {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
        }
        let mut hours = Vec::new();
        if let Some(list) = &config.hours {
            for item in list.items() {
                let (a, b) = item
                    .split_once('-')
                    .ok_or_else(|| format!("hours: {item:?} is not a range like \"08:00-18:00\""))?;
                hours.push((clock(a)?, clock(b)?));
            }
        }
        let ranges = |list: &Option<Vec<String>>| -> Result<Vec<(Date, Date)>, String> {
            list.iter()
                .flatten()
                .map(|item| {
                    let (a, b) = item.split_once("..").unwrap_or((item, item));
                    let parse = |d: &str| d.trim().parse::<Date>().map_err(|e| format!("dates: {d:?}: {e}"));
                    Ok((parse(a)?, parse(b)?))
                })
                .collect()
        };
        let tz = match &config.tz {
            Some(name) => TimeZone::get(name).map_err(|e| format!("tz: unknown time zone {name:?}: {e}"))?,
            None => TimeZone::system(),
        };
        Ok(During {
            days,
            hours,
            dates: ranges(&config.dates)?,
            except: ranges(&config.except_dates)?,
            tz,
            text: describe(config),
        })
    }

    /// Whether the event happened inside the window.
    pub fn contains(&self, event: &Event) -> bool {
        let local = event.at.timestamp().to_zoned_datetime(self.tz.clone());
        let date = local.date();
        let time = local.time();
        let weekday = date.weekday().to_monday_zero_offset() as usize;
        let in_hours = self.hours.is_empty()
            || self.hours.iter().any(|&(start, end)| {
                if start <= end {
                    time >= start && time < end
                } else {
                    time >= start || time < end // spans midnight
                }
            });
        let in_dates = self.dates.is_empty() || self.dates.iter().any(|&(a, b)| date >= a && date <= b);
        let excepted = self.except.iter().any(|&(a, b)| date >= a && date <= b);
        self.days[weekday] && in_hours && in_dates && !excepted
    }

    /// Why the event is outside (for `callhook test`).
    pub(crate) fn explain(&self, event: &Event) -> String {
        let local = event.at.timestamp().to_zoned_datetime(self.tz.clone());
        format!("{} is outside {}", local.strftime("%a %Y-%m-%d %H:%M %Z"), self.text)
    }
}

fn weekday(name: &str) -> Result<usize, String> {
    let day = match name.trim().to_ascii_lowercase().get(..3) {
        Some("mon") => Weekday::Monday,
        Some("tue") => Weekday::Tuesday,
        Some("wed") => Weekday::Wednesday,
        Some("thu") => Weekday::Thursday,
        Some("fri") => Weekday::Friday,
        Some("sat") => Weekday::Saturday,
        Some("sun") => Weekday::Sunday,
        _ => {
            return Err(format!(
                "days: {name:?} is not a weekday (mon, tue, ... or a range mon-fri)"
            ));
        }
    };
    Ok(day.to_monday_zero_offset() as usize)
}

fn clock(text: &str) -> Result<Time, String> {
    let text = text.trim();
    if text == "24:00" {
        return Ok(Time::MAX);
    }
    let bad = || format!("hours: {text:?} is not HH:MM or HH:MM:SS");
    let mut parts = text.split(':').map(|p| p.parse::<i8>().map_err(|_| bad()));
    let h = parts.next().ok_or_else(bad)??;
    let m = parts.next().ok_or_else(bad)??;
    let s = parts.next().transpose()?.unwrap_or(0);
    if parts.next().is_some() {
        return Err(bad());
    }
    Time::new(h, m, s, 0).map_err(|e| format!("hours: {text:?}: {e}"))
}

fn describe(config: &DuringConfig) -> String {
    let mut parts = Vec::new();
    if let Some(days) = &config.days {
        parts.push(days.items().join(","));
    }
    if let Some(hours) = &config.hours {
        parts.push(hours.items().join(","));
    }
    if let Some(dates) = &config.dates {
        parts.push(format!("dates {}", dates.join(",")));
    }
    if let Some(dates) = &config.except_dates {
        parts.push(format!("except {}", dates.join(",")));
    }
    parts.push(config.tz.clone().unwrap_or_else(|| "local time".into()));
    parts.join(" ")
}
