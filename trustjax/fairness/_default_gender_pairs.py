"""The default gendered word and first-name tables, (male, female) pairs.

Built from the shared gender word lists (`winobias_generalized_swaps.txt`,
`winobias_extra_gendered_words.txt`, MIT, github.com/uclanlp/corefBias; and
`debiaswe_definitional_pairs.json`, `debiaswe_equalize_pairs.json`, MIT,
github.com/tolga-b/debiaswe; Bolukbasi et al. 2016), lower-cased, oriented
(male, female), de-duplicated, and cleaned as follows (the raw union maps
some words to two partners, which `load_gender_pairs` refuses):

  * typos fixed: mentleman -> gentleman, barnoesses -> baronesses,
    godess(es) -> goddess(es), heros -> heroes, adultor(s) dropped,
    seamstress' -> seamstresses;
  * conflicts resolved: chairwomen -> chairmen (not chairman); guy <-> gal
    (not girl); lady <-> lord dropped (lady <-> gentleman kept, so ladies
    <-> gentlemen); nun <-> monk (priest <-> priestess); miss/ms. <-> sir/mr.
    dropped (ma'am <-> sir, mrs. <-> mr. kept); chick/dude <-> gal/guy
    dropped; fella <-> granny dropped;
  * dropped because one side is mostly not gendered in running text or is
    not a word swap: governor, host(s), master(s), bachelor(s), tailor(s),
    god(s) (kept as god <-> goddess: both are gendered), monastery/convent,
    testosterone/estrogen, colt/filly, gelding/mare, multi-word entries
    (underscores: catholic_priest, twin_brother, prostate_cancer, ...);
  * her / his / him / hers are not in the table: `CounterfactualSwapper`
    resolves them by its documented rule (see counterfactual.py);
  * a few plural/singular forms added so every entry has its partner form:
    heroes/heroines, grandpas/grandmas, congressmen/congresswomen,
    councilmen/councilwomen, policemen/policewomen, schoolboys/schoolgirls,
    kings/queens, stepfather(s)/stepmother(s), godfather/godmother.

First names: (male, female) pairs of common US given names (Social Security
Administration popularity lists, 1950-2000), chosen to be unambiguous as
words (no Will, Mark, Bill, Grace, Hope, Joy, Rose, June, May, Guy ...), and
each name used once. Swapped only when capitalised (`John` -> `Mary`; the
word `john` is left alone).
"""

GENDER_PAIRS = (
    ("he", "she"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("guy", "gal"), ("guys", "gals"), ("dude", "chick"), ("dudes", "chicks"),
    ("gentleman", "lady"), ("gentlemen", "ladies"), ("lad", "lass"),
    ("lads", "lasses"), ("male", "female"), ("males", "females"),
    ("father", "mother"), ("fathers", "mothers"), ("dad", "mom"),
    ("dads", "moms"), ("daddy", "mommy"), ("daddies", "mommies"),
    ("grandpa", "grandma"), ("grandpas", "grandmas"),
    ("fatherhood", "motherhood"), ("son", "daughter"), ("sons", "daughters"),
    ("brother", "sister"), ("brothers", "sisters"), ("uncle", "aunt"),
    ("uncles", "aunts"), ("nephew", "niece"), ("nephews", "nieces"),
    ("grandfather", "grandmother"), ("grandfathers", "grandmothers"),
    ("grandson", "granddaughter"), ("grandsons", "granddaughters"),
    ("stepfather", "stepmother"), ("stepfathers", "stepmothers"),
    ("stepson", "stepdaughter"), ("stepsons", "stepdaughters"),
    ("godfather", "godmother"),
    ("husband", "wife"), ("husbands", "wives"), ("groom", "bride"),
    ("grooms", "brides"), ("fiance", "fiancee"), ("fiances", "fiancees"),
    ("widower", "widow"),
    ("widowers", "widows"), ("boyfriend", "girlfriend"),
    ("boyfriends", "girlfriends"),
    ("king", "queen"), ("kings", "queens"), ("prince", "princess"),
    ("princes", "princesses"), ("duke", "duchess"), ("dukes", "duchesses"),
    ("emperor", "empress"), ("emperors", "empresses"), ("baron", "baroness"),
    ("barons", "baronesses"), ("marquis", "marchioness"),
    ("sir", "ma'am"), ("mr.", "mrs."), ("beau", "belle"), ("beaus", "belles"),
    ("actor", "actress"), ("actors", "actresses"), ("waiter", "waitress"),
    ("waiters", "waitresses"), ("steward", "stewardess"),
    ("stewards", "stewardesses"), ("hero", "heroine"), ("heroes", "heroines"),
    ("god", "goddess"), ("gods", "goddesses"), ("monk", "nun"),
    ("monks", "nuns"), ("priest", "priestess"), ("priests", "priestesses"),
    ("abbot", "abbess"), ("abbots", "abbesses"), ("wizard", "witch"),
    ("wizards", "witches"), ("sorcerer", "sorceress"),
    ("sorcerers", "sorceresses"), ("enchanter", "enchantress"),
    ("headmaster", "headmistress"), ("headmasters", "headmistresses"),
    ("landlord", "landlady"), ("landlords", "landladies"),
    ("manservant", "maidservant"), ("manservants", "maidservants"),
    ("masseur", "masseuse"), ("masseurs", "masseuses"),
    ("businessman", "businesswoman"), ("businessmen", "businesswomen"),
    ("chairman", "chairwoman"), ("chairmen", "chairwomen"),
    ("spokesman", "spokeswoman"), ("spokesmen", "spokeswomen"),
    ("congressman", "congresswoman"), ("congressmen", "congresswomen"),
    ("councilman", "councilwoman"), ("councilmen", "councilwomen"),
    ("policeman", "policewoman"), ("policemen", "policewomen"),
    ("airman", "airwoman"), ("airmen", "airwomen"),
    ("cameraman", "camerawoman"), ("cameramen", "camerawomen"),
    ("barman", "barwoman"), ("barmen", "barwomen"),
    ("cowboy", "cowgirl"), ("cowboys", "cowgirls"),
    ("busboy", "busgirl"), ("busboys", "busgirls"),
    ("bellboy", "bellgirl"), ("bellboys", "bellgirls"),
    ("schoolboy", "schoolgirl"), ("schoolboys", "schoolgirls"),
    ("fraternity", "sorority"), ("fraternities", "sororities"),
)

NAME_PAIRS = (
    ("James", "Mary"), ("John", "Patricia"), ("Robert", "Jennifer"),
    ("Michael", "Linda"), ("David", "Elizabeth"), ("Richard", "Barbara"),
    ("Joseph", "Susan"), ("Thomas", "Jessica"), ("Charles", "Sarah"),
    ("Christopher", "Karen"), ("Daniel", "Nancy"), ("Matthew", "Lisa"),
    ("Anthony", "Margaret"), ("Donald", "Betty"), ("Steven", "Sandra"),
    ("Paul", "Ashley"), ("Andrew", "Dorothy"), ("Joshua", "Kimberly"),
    ("Kenneth", "Emily"), ("Kevin", "Donna"), ("Brian", "Michelle"),
    ("George", "Carol"), ("Edward", "Amanda"), ("Ronald", "Melissa"),
    ("Timothy", "Deborah"), ("Jason", "Stephanie"), ("Jeffrey", "Rebecca"),
    ("Ryan", "Laura"), ("Jacob", "Sharon"), ("Gary", "Cynthia"),
    ("Nicholas", "Kathleen"), ("Eric", "Amy"), ("Jonathan", "Shirley"),
    ("Stephen", "Angela"), ("Larry", "Helen"), ("Justin", "Anna"),
    ("Scott", "Brenda"), ("Brandon", "Pamela"), ("Benjamin", "Nicole"),
    ("Samuel", "Samantha"), ("Gregory", "Katherine"), ("Frank", "Emma"),
    ("Alexander", "Christine"), ("Raymond", "Debra"), ("Patrick", "Rachel"),
    ("Jack", "Catherine"), ("Dennis", "Carolyn"), ("Jerry", "Janet"),
    ("Tyler", "Ruth"), ("Aaron", "Maria"), ("Jose", "Heather"),
    ("Henry", "Diane"), ("Adam", "Virginia"), ("Douglas", "Julie"),
    ("Nathan", "Joyce"), ("Peter", "Victoria"), ("Zachary", "Olivia"),
    ("Kyle", "Kelly"), ("Walter", "Christina"), ("Harold", "Lauren"),
    ("Jeremy", "Joan"), ("Ethan", "Evelyn"), ("Carl", "Judith"),
    ("Keith", "Megan"), ("Roger", "Cheryl"), ("Gerald", "Andrea"),
    ("Christian", "Hannah"), ("Terry", "Martha"), ("Sean", "Jacqueline"),
    ("Arthur", "Frances"), ("Austin", "Gloria"), ("Noah", "Ann"),
    ("Lawrence", "Teresa"), ("Jesse", "Kathryn"), ("Joe", "Sara"),
    ("Bryan", "Janice"), ("Billy", "Jean"), ("Jordan", "Alice"),
    ("Albert", "Madison"), ("Dylan", "Doris"), ("Bruce", "Abigail"),
    ("Willie", "Julia"), ("Gabriel", "Judy"), ("Alan", "Sophia"),
    ("Juan", "Denise"), ("Logan", "Amber"), ("Wayne", "Marilyn"),
    ("Ralph", "Beverly"), ("Roy", "Danielle"), ("Eugene", "Theresa"),
    ("Randy", "Diana"), ("Vincent", "Brittany"), ("Russell", "Natalie"),
    ("Louis", "Isabella"), ("Philip", "Charlotte"), ("Bobby", "Kayla"),
    ("Johnny", "Alexis"), ("Bradley", "Lori"), ("Howard", "Tiffany"),
    ("Fred", "Tina"), ("Ernest", "Erin"), ("Martin", "Wendy"),
    ("Craig", "Vanessa"), ("Stanley", "Sally"), ("Shawn", "Suzanne"),
    ("Travis", "Jill"), ("Todd", "Rita"), ("Clarence", "Holly"),
    ("Leonard", "Monica"), ("Harry", "Lucy"), ("Chad", "Kristen"),
    ("Marcus", "Meryl"), ("Tom", "Julianne"), ("Matt", "Kate"),
    ("Mike", "Jane"), ("Steve", "Jenny"), ("Dave", "Carrie"),
    ("Jim", "Ellen"), ("Dan", "Amelia"), ("Bob", "Jodie"),
    ("Kurt", "Meg"), ("Clint", "Reese"), ("Burt", "Goldie"),
    ("Ben", "Claire"), ("Sam", "Nora"),
)
