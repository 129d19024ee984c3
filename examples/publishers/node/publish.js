// Publish one event to hookrelay, as an upstream service would, with amqplib.
//
// Run it:
//   (cd examples/publishers/node && npm ci)
//   node examples/publishers/node/publish.js Contact.created acc_1 '{"name":"Ada"}'
//
// Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f), HOOKRELAY_NAMESPACE
// (default hookrelay), EVENT_ID (default: a new UUID). Prints `published <event id>` once the
// broker has confirmed the message; exits non-zero, saying why on stderr, otherwise.
"use strict";

const { randomUUID } = require("node:crypto");
const amqp = require("amqplib");

// How long the broker may take to connect and confirm before we give up.
const TIMEOUT_MS = 10_000;

async function publish(url, exchange, routingKey, body, eventId) {
  const connection = await amqp.connect(url);
  try {
    // A confirm channel: the broker acks each message once it has taken responsibility for
    // it (written it to disk, for a persistent one), or nacks it.
    const channel = await connection.createConfirmChannel();
    // The broker closes the channel on an error (say, the exchange does not exist): keep
    // its reason for the message, as the pending confirm only says "channel closed". An
    // unhandled 'error' event would also crash the process.
    let channelError = null;
    channel.on("error", (e) => {
      channelError = e;
    });
    // A mandatory message that no queue takes comes back as a basic.return, which RabbitMQ
    // sends before the ack: by the time the confirm arrives we know whether it came back.
    let returned = null;
    channel.on("return", (msg) => {
      returned = msg.fields;
    });
    await new Promise((resolve, reject) => {
      channel.publish(
        exchange,
        routingKey,
        body,
        {
          contentType: "application/json",
          persistent: true, // delivery_mode 2: survives a broker restart
          messageId: eventId,
          // Without it, a message no queue is bound for is silently dropped.
          mandatory: true,
        },
        (err) => {
          if (!err) return resolve();
          if (err.message === "message nacked") return reject(new Error("the broker refused the message (nack)"));
          reject(channelError ?? err);
        },
      );
    });
    if (returned) {
      throw new Error(
        `returned (${returned.replyCode} ${returned.replyText}): no queue is bound to ${exchange} ` +
          `for ${JSON.stringify(routingKey)} (has hookrelay ever started with this namespace?)`,
      );
    }
  } finally {
    await connection.close().catch(() => {});
  }
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 3) {
    console.error("usage: publish.js <event type> <account id> <data as JSON>");
    return 2;
  }
  const [eventType, accountId, dataArg] = args;
  let data;
  try {
    data = JSON.parse(dataArg);
  } catch (e) {
    console.error(`data is not JSON: ${e.message}`);
    return 2;
  }
  const url = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f";
  const namespace = process.env.HOOKRELAY_NAMESPACE || "hookrelay";
  // A stable id lets a retry of this script (after a crash, or a timeout whose publish did
  // land) be delivered once: hookrelay dedupes on it. Pass your own business key if any.
  const eventId = process.env.EVENT_ID || randomUUID();
  const body = Buffer.from(
    JSON.stringify({
      id: eventId,
      type: eventType,
      account_id: accountId,
      occurred_at: new Date().toISOString(),
      data,
    }),
  );

  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no confirm from the broker within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  try {
    await Promise.race([publish(url, `${namespace}.events`, eventType, body, eventId), timeout]);
  } catch (e) {
    // Unknown outcome on a timeout: the message may have landed. Publishing again with the
    // same EVENT_ID is safe, as hookrelay delivers an id once per webhook.
    console.error(`not published: ${e.message}`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
  process.stdout.write(`published ${eventId}\n`);
  return 0;
}

// Exit explicitly: a timed-out connection attempt would otherwise keep the process alive.
main().then((code) => process.exit(code));
