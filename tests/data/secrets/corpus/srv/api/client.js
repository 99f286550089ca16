const api = axios.create({
  baseURL: 'https://api.internal',
  headers: { Authorization: 'Bearer eyJkXOajNSDo1HD7NlWpopgVHkaRZSjou.eyJmQQFQzcmPexqFUs-TViMrm-7HAeAD4B6Cy-FDd2x9KAL02Ia9-0x-W816HX_.0yuzKNYxOW0ul1-KCK4Me77Jh-vFDSezBxziN5j73hh' },
});
