export * from "./errors.js";
export * from "./canonical.js";
export { HASH_CONTEXT, SIG_DOMAIN, L, fihHash, verifyStrict, sign, publicKey, isAuthorKey, toHex, fromHex } from "./crypto.js";
export * from "./records.js";
export * from "./keys.js";
export * from "./answers.js";
export * from "./client.js";
export * from "./verify.js";
