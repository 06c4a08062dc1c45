"""Secure aggregation (Bonawitz et al. 2017): the aggregator learns the sum of the sites'
updates and nothing else about any one of them.

One round, in the stages the aggregator's tasks name:

1. ADVERTISE_KEYS: each site advertises two fresh X25519 public keys (``site.SiteSession``).
2. SHARE_KEYS: the aggregator closes the roster and relays it; each site Shamir-shares its
   mask private key and a fresh self-mask seed (threshold t), seals each share for its
   recipient with a key agreed by X25519 + HKDF (AES-GCM), and sends them for the
   aggregator to route blind.
3. MASKED_UPDATE: with the shares addressed to it, each site trains, encodes its weighted
   update in fixed point mod 2^32 (``encoding``) and adds its self mask and one pairwise mask
   per other participant (AES-CTR streams from HKDF seeds; the two sites of a pair add and
   subtract the same stream, so pairs cancel in the sum).
4. UNMASK: the aggregator tells the survivors who sent a masked update and who dropped. Each
   reveals shares of the survivors' self seeds and of the dropped sites' mask keys, never
   both for one site. With t of them, the aggregator removes the masks from the sum
   (``server``).

Steps 1 and 2 of the next round ride on steps 3 and 4 of this one (keys with the masked
update, shares with the reveal), so a round in steady state opens at step 3.

The threat model is an honest-but-curious aggregator and sites that may drop at any step.
Sample counts are visible to the aggregator (they fix the weights); updates are not.
"""
