//! The scenarios `make bench` runs, each on fresh services, database and namespace.

use hookrelay_broker::QueueType;

#[derive(Clone, Copy)]
pub(crate) enum Pace {
    /// Publish everything at once, as fast as confirms allow.
    Burst,
    /// A steady rate of events per second.
    Steady(u32),
}

/// When to publish how many events: in a burst, 1 000 at a time as fast as confirms allow;
/// at a steady rate, a hundredth of a second's worth every 10 ms.
pub(crate) struct Pacer {
    tick: Option<(tokio::time::Interval, usize)>,
}

impl Pacer {
    pub(crate) fn new(pace: Pace) -> Self {
        let tick = match pace {
            Pace::Steady(rate) => Some((
                tokio::time::interval(std::time::Duration::from_millis(10)),
                (rate / 100) as usize,
            )),
            Pace::Burst => None,
        };
        Self { tick }
    }

    /// Waits until the next events are due; answers how many.
    pub(crate) async fn next(&mut self) -> usize {
        match &mut self.tick {
            Some((interval, per_tick)) => {
                interval.tick().await;
                *per_tick
            }
            None => 1000,
        }
    }

    pub(crate) fn is_steady(&self) -> bool {
        self.tick.is_some()
    }
}

/// Which RabbitMQ a scenario runs against.
#[derive(Clone, Copy)]
pub(crate) enum Rabbit {
    /// The machine's, on 5672.
    Shared,
    /// A node of the scenario's own, with the open-files limit RabbitMQ asks for in
    /// production: thousands of webhook queues holding messages need it.
    Own,
    /// A three-node cluster of the scenario's own, with this queue type.
    Cluster(QueueType),
}

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) rabbit: Rabbit,
    /// `hookrelay serve` processes sharing the work.
    pub(crate) processes: usize,
    pub(crate) webhooks: usize,
    pub(crate) accounts: usize,
    pub(crate) events: usize,
    pub(crate) pace: Pace,
    /// Webhooks each event matches.
    pub(crate) fan_out: usize,
    /// Accounts whose first webhook fails: the first half of them answer 503, the others
    /// hang until the request timeout.
    pub(crate) failing: usize,
    /// Finished logs older than `log_retention` (1 h here) in the database before the
    /// service starts: its retention job deletes them while the scenario runs.
    pub(crate) old_logs: usize,
    /// Whether every webhook gets one delivery, unmeasured, before the measured ones: the
    /// cost of a delivery once every webhook has had its first. RabbitMQ creates a
    /// classic queue's directory and files at its first message, and hookrelay's cost per
    /// delivery grows while the broker is slow; at ten deliveries a webhook, a tenth are
    /// firsts.
    pub(crate) warm_up: bool,
    /// Bytes of filler in each event's `data`, on top of the few dozen every event has.
    pub(crate) filler: usize,
    /// Whether every webhook has a three-clause filter, which every event passes: the cost
    /// of matching, with the same deliveries as without.
    pub(crate) filtered: bool,
    /// Whether every webhook is FIFO (one delivery at a time, in publish order).
    pub(crate) fifo: bool,
    /// Whether another account has a FIFO webhook, which gets none of the events: what the
    /// ordered fan-out costs the unordered webhooks once it is in use.
    pub(crate) fifo_elsewhere: bool,
    /// Whether the event type has a 20-property schema, which every event satisfies: what
    /// checking `data` costs the fan-out.
    pub(crate) schema: bool,
}

impl Scenario {
    /// What a scenario is unless it says otherwise: one process on the shared broker, a
    /// burst, one account, each event to one healthy webhook, no old logs.
    pub(crate) const DEFAULT: Self = Self {
        name: "",
        rabbit: Rabbit::Shared,
        processes: 1,
        webhooks: 1,
        accounts: 1,
        events: 10_000,
        pace: Pace::Burst,
        fan_out: 1,
        failing: 0,
        old_logs: 0,
        warm_up: false,
        filler: 0,
        filtered: false,
        fifo: false,
        fifo_elsewhere: false,
        schema: false,
    };
}

/// A scenario of the cost of a delivery: 10 000 events, each to the 10 webhooks of one of
/// `accounts`, on a RabbitMQ node of its own.
const fn cost(name: &'static str, webhooks: usize, accounts: usize, warm_up: bool) -> Scenario {
    Scenario {
        name,
        rabbit: Rabbit::Own,
        webhooks,
        accounts,
        events: 10_000,
        fan_out: 10,
        warm_up,
        ..Scenario::DEFAULT
    }
}

/// A scenario of the cost of a delivery at a steady rate: 200 events a second for a minute,
/// each to the 10 webhooks of one of `accounts`, after a warm-up, on a RabbitMQ node of its
/// own.
const fn paced(name: &'static str, webhooks: usize, accounts: usize) -> Scenario {
    Scenario {
        name,
        pace: Pace::Steady(200),
        events: 12_000,
        ..cost(name, webhooks, accounts, true)
    }
}

/// Whether `--only only` runs the scenario `name`.
pub(crate) fn selected(only: &str, name: &str) -> bool {
    let exact = SCENARIOS.iter().any(|s| s.name == only)
        || crate::alone::ALONE.iter().any(|a| a.name == only)
        || only == "storm"
        || only == "volume";
    if exact {
        name == only
    } else {
        name.contains(only)
    }
}

pub(crate) const SCENARIOS: [Scenario; 29] = [
    // What a delivery of a 1 KiB event costs PostgreSQL (WAL, disk, HOT updates), with one
    // webhook per event and with ten; every scenario prints those figures, these are for
    // them alone.
    Scenario {
        name: "storage W=1",
        webhooks: 1,
        events: 10_000,
        filler: 900,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "storage W=10",
        webhooks: 10,
        events: 2_000,
        fan_out: 10,
        filler: 900,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=1 burst",
        webhooks: 1,
        events: 20_000,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=10 burst",
        webhooks: 10,
        events: 5_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    // 10 webhooks, one per account, events spread over the accounts: 1 000 deliveries/s.
    Scenario {
        name: "W=10 burst, a FIFO webhook elsewhere",
        webhooks: 10,
        events: 5_000,
        fan_out: 10,
        fifo_elsewhere: true,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=10 burst, schema",
        webhooks: 10,
        events: 5_000,
        fan_out: 10,
        schema: true,
        ..Scenario::DEFAULT
    },
    // One request at a time, each recorded before the next.
    Scenario {
        name: "W=1 FIFO burst",
        webhooks: 1,
        events: 5_000,
        fifo: true,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=10 steady 1000 ev/s",
        webhooks: 10,
        accounts: 10,
        events: 15_000,
        pace: Pace::Steady(1_000),
        ..Scenario::DEFAULT
    },
    // 10 webhooks of one account, every event to all ten: 3 000 deliveries/s for 20 s.
    Scenario {
        name: "W=10 steady 3000/s",
        webhooks: 10,
        events: 6_000,
        pace: Pace::Steady(300),
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    // 100 webhooks in 10 accounts, every event to the 10 of one account; then the same with
    // one webhook of each account failing (5 answering 503, 5 hanging until the timeout):
    // what the failing ones cost the healthy ones, in a burst and at a steady rate.
    Scenario {
        name: "W=100 healthy burst",
        webhooks: 100,
        accounts: 10,
        events: 10_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=100 10 failing burst",
        webhooks: 100,
        accounts: 10,
        events: 10_000,
        fan_out: 10,
        failing: 10,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=100 healthy steady",
        webhooks: 100,
        accounts: 10,
        events: 3_000,
        pace: Pace::Steady(100),
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=100 10 failing steady",
        webhooks: 100,
        accounts: 10,
        events: 3_000,
        pace: Pace::Steady(100),
        fan_out: 10,
        failing: 10,
        ..Scenario::DEFAULT
    },
    // The steady scenario again, while the retention job deletes 300 000 old logs (and as
    // many attempts) beside it: what retention costs the pipeline.
    Scenario {
        name: "W=10 steady + retention",
        webhooks: 10,
        accounts: 10,
        events: 15_000,
        pace: Pace::Steady(1_000),
        old_logs: 300_000,
        ..Scenario::DEFAULT
    },
    // The cost of a delivery as webhooks grow: the same 100 000 deliveries (10 000 events,
    // each to the 10 webhooks of one account) to 10, 1 000 and 10 000 webhooks, each on a
    // broker node of its own so that its CPU time can be told apart.
    cost("cost W=10", 10, 1, false),
    cost("cost W=1000", 1_000, 100, false),
    cost("cost W=10000", 10_000, 1_000, false),
    // The same, after one unmeasured delivery to every webhook.
    cost("warm W=10", 10, 1, true),
    cost("warm W=1000", 1_000, 100, true),
    cost("warm W=10000", 10_000, 1_000, true),
    // The same webhooks at a steady 2 000 deliveries a second, which this machine keeps up
    // with at W=10 000: the cost when queues do not back up, each message sent on at once.
    paced("paced W=10", 10, 1),
    paced("paced W=1000", 1_000, 100),
    paced("paced W=10000", 10_000, 1_000),
    // One process, then two sharing the work, on the same broker and the same load.
    Scenario {
        name: "procs=1 W=100",
        rabbit: Rabbit::Own,
        webhooks: 100,
        accounts: 10,
        events: 10_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "procs=2 W=100",
        rabbit: Rabbit::Own,
        processes: 2,
        webhooks: 100,
        accounts: 10,
        events: 10_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    // Classic and quorum shared queues on a three-node cluster, in a burst and at a steady
    // rate (which shows the latency of the pipeline rather than of the queue draining).
    Scenario {
        name: "cluster classic W=10 burst",
        rabbit: Rabbit::Cluster(QueueType::Classic),
        webhooks: 10,
        events: 5_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "cluster quorum W=10 burst",
        rabbit: Rabbit::Cluster(QueueType::Quorum),
        webhooks: 10,
        events: 5_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    // Last: tearing down 1 000 queues keeps RabbitMQ busy for a while after. The same with
    // a filter on every webhook: what matching costs the fan-out.
    Scenario {
        name: "W=1000/100 accounts burst",
        webhooks: 1_000,
        accounts: 100,
        events: 20_000,
        fan_out: 10,
        ..Scenario::DEFAULT
    },
    Scenario {
        name: "W=1000/100 accounts burst, filtered",
        webhooks: 1_000,
        accounts: 100,
        events: 20_000,
        fan_out: 10,
        filtered: true,
        ..Scenario::DEFAULT
    },
];
