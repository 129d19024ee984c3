//! Publishing that loses nothing: a confirm-mode channel on which every publish is mandatory,
//! so a message is either confirmed by the broker as routed to a queue, or comes back.
//!
//! A returned message is recognised by its own exchange and routing key, never by the confirm
//! it arrives with: the client may attach a `basic.return` to another publish's confirm when
//! many are in flight, and trusting the pairing would resend the wrong message and lose the
//! returned one. So one owner publishes a whole batch, settles it, and deals with whatever came
//! back, before the next batch; nobody else publishes on the channel meanwhile.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, PublisherConfirm};

use crate::{BrokerError, Connection, Declarer, Outgoing};

/// Every publish is mandatory: a message no queue takes comes back instead of vanishing.
const MANDATORY: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// How often a returned message is sent again (after the handler has made a route for it)
/// before the batch fails.
const MAX_RESEND: usize = 3;

/// What the handler of a returned message decided.
#[derive(Debug, Clone)]
pub enum Reroute {
    /// A route exists now (a queue was declared): send it again.
    Resend,
    /// Its queue cannot be reached now: send this in its place (the same message on a way
    /// round, say a delay). Should that fail, the returned message is what failed.
    Instead(Box<Outgoing>),
    /// It has nowhere to go and the handler has dealt with that (for a deleted webhook,
    /// ended its logs): drop it.
    Drop,
    /// It has nowhere to go: its publish fails as unroutable.
    Fail,
}

/// Makes a route for a message the broker returned as unroutable, or decides to drop it.
pub trait ReturnHandler {
    type Error: std::error::Error + Send + Sync + 'static;

    fn reroute(
        &mut self,
        declarer: &Declarer,
        returned: &Outgoing,
    ) -> impl std::future::Future<Output = Result<Reroute, Self::Error>> + Send;
}

/// For a publisher that makes no routes: a message that comes back fails as unroutable.
pub struct NoRoutes;

impl ReturnHandler for NoRoutes {
    type Error = std::convert::Infallible;

    async fn reroute(&mut self, _: &Declarer, _: &Outgoing) -> Result<Reroute, Self::Error> {
        Ok(Reroute::Fail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error")]
    Broker(#[from] BrokerError),
    #[error("the broker refused a message (nack)")]
    Nacked,
    #[error("the broker could not route a message to `{exchange}` with key `{routing_key}`")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("cannot make a route for a returned message")]
    Handler(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A confirm-mode channel with one owner, and a channel of its own for declaring what its
/// messages need (a refused declaration must not close the channel that waits for confirms).
pub struct Publisher {
    channel: Channel,
    declarer: Declarer,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> Result<Self, BrokerError> {
        let channel = connection.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            declarer: Declarer::new(connection.clone()),
        })
    }

    /// For declaring what the messages need.
    pub fn declarer(&self) -> &Declarer {
        &self.declarer
    }

    /// A message that matches none of `handler`'s routes comes back to it.
    pub async fn publish<H: ReturnHandler>(
        &mut self,
        message: &Outgoing,
        handler: &mut H,
    ) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(message), handler)
            .await
    }

    /// Publishes `messages`, then waits for all their confirms at once (one round trip for
    /// the batch). Returned messages go to `handler`, and are sent again if it made a route.
    /// `Ok` means every message not dropped by the handler is confirmed routed.
    pub async fn publish_all<H: ReturnHandler>(
        &mut self,
        messages: &[Outgoing],
        handler: &mut H,
    ) -> Result<(), PublishError> {
        match self
            .publish_each(messages, handler)
            .await?
            .into_iter()
            .find_map(Result::err)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// As [`Publisher::publish_all`], with a result per message, so that one refused message
    /// fails only its own sender. The outer error (the channel or the handler failed) leaves
    /// every message's fate unknown.
    pub async fn publish_each<H: ReturnHandler>(
        &mut self,
        messages: &[Outgoing],
        handler: &mut H,
    ) -> Result<Vec<Result<(), PublishError>>, PublishError> {
        let mut results: Vec<Result<(), PublishError>> = messages.iter().map(|_| Ok(())).collect();
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            confirms.push(self.send(m).await?);
        }
        // A confirm belongs to its own publish (only a return may travel with another's).
        let mut returned = Vec::new();
        for (i, confirm) in confirms.into_iter().enumerate() {
            match confirm.await.map_err(BrokerError::from)? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(message)) => returned.push(outgoing(message)),
                Confirmation::Nack(_) => results[i] = Err(PublishError::Nacked),
            }
        }
        // Each message coming back is paired with the one of `messages` it stands for: a
        // message sent `Instead` is not one of them, and its failure is the original's.
        let mut returned: Vec<(Outgoing, Outgoing)> =
            returned.into_iter().map(|m| (m.clone(), m)).collect();
        let mut unroutable = Vec::new();
        for _ in 0..MAX_RESEND {
            if returned.is_empty() {
                break;
            }
            // What this round sent, each with the original it stands for.
            let mut sent: Vec<(Outgoing, Outgoing)> = Vec::with_capacity(returned.len());
            let mut confirms = Vec::with_capacity(returned.len());
            for (message, original) in returned.drain(..) {
                match handler
                    .reroute(&self.declarer, &message)
                    .await
                    .map_err(|e| PublishError::Handler(Box::new(e)))?
                {
                    Reroute::Resend => {
                        confirms.push(self.send(&message).await?);
                        sent.push((message, original));
                    }
                    Reroute::Instead(other) => {
                        confirms.push(self.send(&other).await?);
                        sent.push((*other, original));
                    }
                    Reroute::Drop => {}
                    Reroute::Fail => unroutable.push((message, original)),
                }
            }
            // A nack is its own publish's; a return is told by its content (see the module doc).
            let mut claimed = vec![false; sent.len()];
            for (i, confirm) in confirms.into_iter().enumerate() {
                match confirm.await.map_err(BrokerError::from)? {
                    Confirmation::Ack(None) | Confirmation::NotRequested => {}
                    Confirmation::Ack(Some(again)) => {
                        let again = outgoing(again);
                        let original = (0..sent.len())
                            .find(|j| !claimed[*j] && same(&sent[*j].0, &again))
                            .map_or_else(
                                || again.clone(),
                                |j| {
                                    claimed[j] = true;
                                    sent[j].1.clone()
                                },
                            );
                        returned.push((again, original));
                    }
                    Confirmation::Nack(_) => {
                        mark(&mut results, messages, &sent[i].1, || PublishError::Nacked)
                    }
                }
            }
        }
        for (message, original) in returned.into_iter().chain(unroutable) {
            let unroutable = || PublishError::Unroutable {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            };
            mark(&mut results, messages, &original, unroutable);
        }
        Ok(results)
    }

    async fn send(&self, m: &Outgoing) -> Result<PublisherConfirm, BrokerError> {
        Ok(self
            .channel
            .basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                MANDATORY,
                &m.body,
                m.properties(),
            )
            .await?)
    }

    pub async fn close(&self) {
        crate::close_channel(&self.channel, "publisher closed").await;
        self.declarer.close().await;
    }
}

fn outgoing(message: lapin::message::BasicReturnMessage) -> Outgoing {
    let delivery = message.delivery;
    Outgoing::from_amqp(
        delivery.exchange.as_str(),
        delivery.routing_key.as_str(),
        delivery.data,
        &delivery.properties,
    )
}

/// Fails the first message still counted as sent that is `returned` (messages alike are
/// interchangeable: which one failed does not matter, only how many).
fn mark(
    results: &mut [Result<(), PublishError>],
    messages: &[Outgoing],
    returned: &Outgoing,
    error: impl FnOnce() -> PublishError,
) {
    if let Some(i) =
        (0..messages.len()).find(|i| results[*i].is_ok() && same(&messages[*i], returned))
    {
        results[i] = Err(error());
    }
}

/// Whether `returned` is `m` come back: the same exchange, routing key and body.
fn same(m: &Outgoing, returned: &Outgoing) -> bool {
    m.exchange == returned.exchange
        && m.routing_key == returned.routing_key
        && m.body == returned.body
}
